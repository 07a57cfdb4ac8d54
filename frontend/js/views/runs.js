// The runs table for a researcher with hundreds or thousands of runs: server-side sort by any
// column (config fields and summary values too), a column picker, substring search over names
// and tags, group-by any config field (collapsible groups with n, mean ± sd and range of the
// shown metrics), multi-select to compare / tag / delete, and pages of 100 rows so 10,000 runs
// stay fluid. The table comes first; a new experiment is one click away, in a drawer beside
// it. Everything that shapes the view lives in the URL:
//   ?status=&tag=&sweep=&q=&sort=-summary.test_acc_eval&cols=a,b&group=config.train.seed&page=2
//   ?preset=ID opens the drawer with that study's preset.

import * as api from "../lib/api.js";
import { runColour } from "../data/colours.js";
import { shortValue } from "../data/fields.js";
import { groupStat, plural } from "../data/format.js";
import { candidatePaths, column, isTerminal, mergePaths, runList } from "../data/runs.js";
import { el, liveProgress, notice, statusBadge, swatch } from "../lib/dom.js";
import { param, runUrl, setParams } from "../lib/router.js";
import { watch } from "../lib/stream.js";
import { emptyState, newRunDrawer } from "./new_run.js";
import {
  bulkBar,
  columnPicker,
  currentColumns,
  currentFilters,
  filterBar,
  groupPicker,
} from "./runs_toolbar.js";

const PAGE = 100;
const POLL_MS = 5000; // safety net beside SSE while runs are live; stops when none are
const GROUP_ROWS = 100; // runs listed under an opened group

// The selection outlives the view: back from a compare view, the same runs are still ticked.
const selected = new Set();

// ---- rows ------------------------------------------------------------------------------------

function cellFor(col, run) {
  switch (col.key) {
    case "id":
      return el(
        "td",
        { class: "num id-cell" },
        swatch(runColour(run.id)),
        el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id}` }),
      );
    case "name":
      return el(
        "td",
        { class: "name" },
        el("a", {
          href: runUrl(run.id),
          "data-link": true,
          class: "run-name",
          text: run.name,
          title: run.name,
        }),
        run.sweep_id !== null && run.sweep_id !== undefined
          ? el("a", {
              class: "sweep-link",
              href: `/sweep?sweep=${run.sweep_id}`,
              "data-link": true,
              text: `sweep ${run.sweep_id}`,
            })
          : null,
      );
    case "status":
      return el("td", { class: "status-cell" }, statusBadge(run.status), liveProgress(run));
    case "tags":
      return el(
        "td",
        { class: "tags" },
        (run.tags ?? []).map((t) => el("span", { class: "tag", text: t })),
      );
    default:
      return el("td", {
        class: col.num ? "num" : "cfg",
        title: col.title ? col.title(run) : null,
        text: col.cell(run),
      });
  }
}

function runRow(view, run, cols) {
  const box = el("input", {
    type: "checkbox",
    checked: selected.has(run.id),
    "aria-label": `select run ${run.id}`,
    onchange: (e) => toggle(view, run.id, e.target.checked),
  });
  return el(
    "tr",
    { dataset: { runId: run.id, status: run.status } },
    el("td", {}, box),
    cols.map((c) => cellFor(c, run)),
  );
}

function toggle(view, id, on) {
  if (on) selected.add(id);
  else selected.delete(id);
  view.bulk.update();
}

// ---- the table ---------------------------------------------------------------------------------

function header(view, cols) {
  const sort = param("sort", "-id");
  const desc = sort.startsWith("-");
  const key = sort.replace(/^[-+]/, "");
  const selectAll = el("input", {
    type: "checkbox",
    "aria-label": "select all shown runs",
    onchange: (e) => {
      for (const run of view.runs) toggle(view, run.id, e.target.checked);
      draw(view);
    },
  });
  view.thead.replaceChildren(
    el(
      "tr",
      {},
      el("th", {}, selectAll),
      cols.map((c) => {
        if (!c.sort) return el("th", { text: c.label, title: c.key, class: c.num ? "num" : null });
        const active = c.sort === key;
        const next = active && !desc ? `-${c.sort}` : c.sort;
        return el(
          "th",
          {
            "aria-sort": active ? (desc ? "descending" : "ascending") : "none",
            title: c.key,
            class: c.num ? "num" : null,
          },
          el("button", {
            type: "button",
            class: `sort${active ? " active" : ""}`,
            dataset: { sort: c.sort },
            text: `${c.label}${active ? (desc ? " ▼" : " ▲") : ""}`,
            onclick: () => {
              setParams({ sort: next === "-id" ? null : next, page: null });
              load(view);
            },
          }),
        );
      }),
    ),
  );
}

function draw(view) {
  const t0 = performance.now();
  const cols = currentColumns().map(column);
  header(view, cols);
  if (param("group")) drawGroups(view, cols);
  else view.tbody.replaceChildren(...view.runs.map((run) => runRow(view, run, cols)));
  window.__bnlabTimings = { ...(window.__bnlabTimings ?? {}), table_ms: performance.now() - t0 };
}

function groupRow(view, g, cols) {
  const key = JSON.stringify(g.value);
  const open = view.openGroups.has(key);
  const cells = cols.map((c) => {
    if (c.key === "name") {
      return el(
        "td",
        { class: "name" },
        el("button", {
          type: "button",
          class: "group-toggle",
          "aria-expanded": String(open),
          text: `${open ? "▾" : "▸"} ${param("group").replace(/^config\./, "")} = ${shortValue(g.value)}`,
          onclick: () => {
            if (open) view.openGroups.delete(key);
            else view.openGroups.add(key);
            loadGroupRuns(view);
          },
        }),
      );
    }
    if (c.key === "id") return el("td", { class: "num group-n", text: `n=${g.n}` });
    if (!c.metric) return el("td");
    const s = g.metrics[c.key];
    return el("td", {
      class: "num",
      text: groupStat(c.key, s),
      title:
        s && s.n
          ? `n=${s.n}, min ${groupStat(c.key, { n: 1, mean: s.min })}, max ${groupStat(c.key, { n: 1, mean: s.max })}`
          : "",
    });
  });
  const selectGroup = el("input", {
    type: "checkbox",
    "aria-label": `select group ${shortValue(g.value)}`,
    checked: g.ids.every((id) => selected.has(id)),
    onchange: (e) => {
      for (const id of g.ids) toggle(view, id, e.target.checked);
      draw(view);
    },
  });
  return el(
    "tr",
    { class: "group-row", dataset: { group: key, n: g.n } },
    el("td", {}, selectGroup),
    cells,
  );
}

function drawGroups(view, cols) {
  const rows = [];
  const hint = (text) => el("tr", {}, el("td", { colspan: cols.length + 1, class: "hint", text }));
  for (const g of view.groups) {
    rows.push(groupRow(view, g, cols));
    const key = JSON.stringify(g.value);
    if (!view.openGroups.has(key)) continue;
    for (const run of view.groupRuns.get(key) ?? []) rows.push(runRow(view, run, cols));
    if (g.n > GROUP_ROWS)
      rows.push(hint(`first ${GROUP_ROWS} of ${g.n}; narrow the filter to see the rest`));
  }
  if (!cols.some((c) => c.metric))
    rows.push(hint("add summary columns (Columns) to see their mean ± sd per group"));
  view.tbody.replaceChildren(...rows);
}

async function loadGroupRuns(view) {
  const sort = param("sort");
  await Promise.all(
    view.groups
      .filter((g) => view.openGroups.has(JSON.stringify(g.value)))
      .map(async (g) => {
        const body = await api.listRuns({
          ids: g.ids.slice(0, GROUP_ROWS).join(","),
          sort,
          limit: GROUP_ROWS,
          lean: 1,
        });
        view.groupRuns.set(JSON.stringify(g.value), runList(body).runs);
      }),
  );
  view.runs = [...view.groupRuns.values()].flat();
  learn(view, view.runs);
  if (view.alive) draw(view);
}

// ---- live updates -----------------------------------------------------------------------------

function replaceRun(view, run) {
  const index = view.runs.findIndex((r) => r.id === run.id);
  if (index < 0) return;
  view.runs[index] = run;
  const row = view.tbody.querySelector(`tr[data-run-id="${run.id}"]`);
  if (row) row.replaceWith(runRow(view, run, currentColumns().map(column)));
}

// In-place update from an event: status and progress move without redrawing the table.
function onEvent(view, event) {
  const run = view.runs.find((r) => r.id === event.runId);
  if (!run) return;
  if (event.progress !== null) run.progress = event.progress;
  if (event.step !== null) run.step = event.step;
  if (event.status && event.status !== run.status) {
    run.status = event.status;
    if (isTerminal(event.status)) {
      api
        .getRun(run.id)
        .then((fresh) => replaceRun(view, fresh))
        .catch(() => {});
      return;
    }
  }
  replaceRun(view, run);
}

// One stream for the live runs on screen, reopened only when that set changes.
function follow(view) {
  clearTimeout(view.pollTimer);
  const live = view.runs.filter((r) => !isTerminal(r.status)).map((r) => r.id);
  const key = live.join(",");
  if (key !== view.liveKey) {
    view.stopStream();
    view.stopStream = () => {};
    view.liveKey = key;
    if (live.length && view.alive) {
      view.stopStream = watch(live, (event) => onEvent(view, event), {
        onClose: () => {
          view.liveKey = "";
        },
      });
    }
  }
  if (live.length && view.alive) view.pollTimer = setTimeout(() => load(view), POLL_MS);
}

// ---- loading ---------------------------------------------------------------------------------

function drawPickers(view) {
  view.pickers.replaceChildren(
    columnPicker(view.known, () => draw(view)),
    groupPicker(view.known, () => load(view)),
  );
}

function learn(view, list) {
  const before = view.known.config.length + view.known.summary.length;
  view.known = mergePaths(view.known, candidatePaths(list));
  if (
    view.known.config.length + view.known.summary.length !== before ||
    !view.pickers.childElementCount
  )
    drawPickers(view);
}

function drawPager(view, count) {
  const page = Math.max(0, Number(param("page", "0")) || 0);
  const pages = Math.max(1, Math.ceil(count / PAGE));
  const go = (p) => () => {
    setParams({ page: p > 0 ? p : null });
    load(view);
  };
  view.pager.replaceChildren(
    ...(pages > 1
      ? [
          el("button", { text: "‹ prev", disabled: page === 0, onclick: go(page - 1) }),
          el("span", { class: "page-of", text: ` page ${page + 1} of ${pages} ` }),
          el("button", { text: "next ›", disabled: page >= pages - 1, onclick: go(page + 1) }),
        ]
      : []),
  );
}

async function loadGroups(view, filters) {
  const metrics = currentColumns()
    .filter((c) => column(c).metric)
    .join(",");
  const body = await api.runGroups({ ...filters, group_by: param("group"), metrics });
  if (!view.alive) return;
  view.groups = body.groups;
  if (!view.known.config.length)
    learn(view, runList(await api.listRuns({ ...filters, limit: 20 })).runs);
  view.status.replaceChildren(
    `${plural(body.count, "run")} in ${plural(view.groups.length, "group")}`,
  );
  view.pager.replaceChildren();
  await loadGroupRuns(view);
  if (!view.runs.length) draw(view);
}

async function loadPage(view, filters) {
  const page = Math.max(0, Number(param("page", "0")) || 0);
  const { runs, count } = runList(
    await api.listRuns({
      ...filters,
      sort: param("sort"),
      offset: page * PAGE,
      limit: PAGE,
      lean: 1,
    }),
  );
  if (!view.alive) return;
  view.runs = runs;
  learn(view, runs);
  draw(view);
  const first = page * PAGE + 1;
  view.status.replaceChildren(
    count > runs.length
      ? `runs ${first}–${first + runs.length - 1} of ${count}`
      : plural(count, "run"),
  );
  drawPager(view, count);
  const empty = !count && !Object.values(filters).some(Boolean);
  view.empty.replaceChildren(
    ...(empty
      ? [emptyState({ onNew: () => view.drawer.open(), onPreset: (id) => view.drawer.open(id) })]
      : []),
  );
}

async function load(view) {
  clearTimeout(view.pollTimer);
  const filters = currentFilters();
  try {
    if (param("group")) await loadGroups(view, filters);
    else await loadPage(view, filters);
    if (!view.alive) return;
    follow(view);
    document.body.dataset.ready = "runs";
  } catch (exc) {
    view.status.replaceChildren(notice(`could not load runs: ${exc.message}`, "error"));
    if (view.alive) view.pollTimer = setTimeout(() => load(view), POLL_MS);
  }
}

// ---- the view --------------------------------------------------------------------------------

function createView(root) {
  const view = {
    runs: [],
    groups: [],
    groupRuns: new Map(),
    openGroups: new Set(),
    known: { config: [], summary: [] },
    stopStream: () => {},
    pollTimer: null,
    liveKey: "",
    alive: true,
    thead: el("thead"),
    tbody: el("tbody"),
    status: el("div", { class: "table-status" }),
    pager: el("div", { class: "pager" }),
    pickers: el("div", { class: "pickers" }),
    empty: el("div", { class: "empty" }),
  };
  const newButton = el("button", {
    text: "New experiment",
    class: "primary",
    "aria-expanded": "false",
  });
  view.drawer = newRunDrawer({
    onSubmitted: () => load(view),
    onToggle: (on) => newButton.setAttribute("aria-expanded", String(on)),
  });
  newButton.addEventListener("click", () => view.drawer.toggle());
  view.bulk = bulkBar(selected, { onChanged: () => load(view), redraw: () => draw(view) });
  root.append(
    el(
      "div",
      { class: "toolbar" },
      filterBar(() => load(view)),
      view.pickers,
      el("div", { class: "spacer" }),
      el("button", { text: "Refresh", onclick: () => load(view) }),
      newButton,
    ),
    view.bulk.bar,
    view.empty,
    el("div", { class: "table-wrap" }, el("table", { class: "runs" }, view.thead, view.tbody)),
    view.status,
    view.pager,
    view.drawer.element,
  );
  return view;
}

export function renderRuns(root) {
  const view = createView(root);
  drawPickers(view);
  const preset = param("preset");
  if (preset !== null) {
    setParams({ preset: null });
    view.drawer.open(preset || null);
  }
  load(view);
  return () => {
    view.alive = false;
    view.stopStream();
    clearTimeout(view.pollTimer);
    document.body.classList.remove("drawer-open");
    delete document.body.dataset.ready;
  };
}
