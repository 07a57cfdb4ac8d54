// The runs table for a researcher with hundreds or thousands of runs: server-side sort by any
// column (config fields and summary values too), a column picker, substring search over names
// and tags, group-by any config field (collapsible groups with n, mean ± sd and range of the
// shown metrics), multi-select to compare / tag / delete, and pages of 100 rows so 10,000 runs
// stay fluid. Everything that shapes the view lives in the URL:
//   ?status=&tag=&sweep=&q=&sort=-summary.test_acc_eval&cols=a,b&group=config.train.seed&page=2

import * as api from "./api.js";
import { runColour } from "./charts.js";
import { el, fmt, isTerminal, notice, pct, progressBar, statusBadge, unplanned } from "./dom.js";
import { flatten, shortValue } from "./fields.js";
import { compareUrl, navigate, param, runUrl, setParams } from "./state.js";
import { watch } from "./stream.js";
import { submitPanel } from "./submit.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "diverged", "crashed"];
const PAGE = 100;
const POLL_MS = 5000; // safety net beside SSE while runs are live; stops when none are
const GROUP_ROWS = 100; // runs listed under an opened group

export function runList(data) {
  if (Array.isArray(data)) return { runs: data, count: data.length };
  const runs = data?.data ?? data?.runs ?? data?.items ?? [];
  return { runs, count: data?.count ?? data?.total ?? runs.length };
}

// ---- columns -------------------------------------------------------------------------------

function trainModeAcc(summary) {
  const modes = summary?.test_acc_train_mode;
  if (!modes || typeof modes !== "object") return { text: "–", title: "" };
  const sizes = Object.keys(modes).sort((a, b) => Number(a) - Number(b));
  const title = sizes.map((bs) => `batch ${bs}: ${pct(modes[bs])}`).join("\n");
  return { text: sizes.length ? `${pct(modes[sizes[0]])} @${sizes[0]}` : "–", title };
}

// [64, 64, 64, 64, 64] → "5×64": deep nets stay readable.
function widthsText(widths) {
  const same = widths.length > 3 && widths.every((w) => w === widths[0]);
  return same ? `${widths.length}×${widths[0]}` : shortValue(widths);
}

function dropoutText(m) {
  const d = m.dropout ?? {};
  return (m.block ?? []).includes("dropout") || m.head_dropout != null
    ? `${d.kind} ${fmt(d.rate, 2)}${d.mask === "per_batch" ? " /batch" : ""}${m.head_dropout != null ? ` head ${m.head_dropout}` : ""}`
    : "none";
}

const get = (obj, path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);

// Named columns; any other key is a dotted path into the run (config.* or summary.*).
// `sort` is what GET /api/runs?sort= orders by (null: not sortable).
const NAMED = {
  id: { label: "id", sort: "id", num: true },
  name: { label: "name", sort: "name" },
  status: { label: "status", sort: "status" },
  progress: { label: "progress", sort: "progress" },
  tags: { label: "tags", sort: null },
  data: { label: "data", sort: "config.dataset.name", cell: (r) => r.config?.dataset?.name ?? "–" },
  model: { label: "model", sort: "config.model.arch",
    // a script run (bnlab SDK) has the user's own model: its class, from the summary
    cell: (r) => (r.kind === "script" ? `script: ${r.summary?.model?.class ?? "own model"}`
      : `${r.config?.model?.arch ?? ""} ${widthsText(r.config?.model?.widths ?? [])}`) },
  kind: { label: "kind", sort: null, cell: (r) => r.kind ?? "engine" },
  block: { label: "block", sort: null, cell: (r) => shortValue(r.config?.model?.block ?? []) },
  dropout: { label: "dropout", sort: "config.model.dropout.rate", cell: (r) => dropoutText(r.config?.model ?? {}) },
  bn_momentum: { label: "BN mom.", sort: "config.model.batchnorm.momentum",
    cell: (r) => (r.config?.model?.batchnorm?.momentum === null ? "cumul." : fmt(r.config?.model?.batchnorm?.momentum, 2)) },
  "summary.test_acc_eval": { label: "test eval", sort: "summary.test_acc_eval", num: true,
    cell: (r) => pct(r.summary?.test_acc_eval), metric: true },
  train_mode: { label: "test train-mode", sort: null, num: true,
    cell: (r) => trainModeAcc(r.summary).text, title: (r) => trainModeAcc(r.summary).title },
  "summary.test_acc_recalibrated": { label: "test recal.", sort: "summary.test_acc_recalibrated", num: true,
    cell: (r) => pct(r.summary?.test_acc_recalibrated), metric: true },
  created_at: { label: "created", sort: "created_at", cell: (r) => String(r.created_at ?? "").slice(0, 16).replace("T", " ") },
};
export const DEFAULT_COLUMNS = ["id", "name", "status", "progress", "tags", "data", "model", "block",
  "dropout", "bn_momentum", "summary.test_acc_eval", "train_mode", "summary.test_acc_recalibrated"];

function column(key) {
  if (NAMED[key]) return { key, ...NAMED[key] };
  const path = key.replace(/^(config|summary)\./, "");
  const isSummary = key.startsWith("summary.");
  return { key, label: path.split(".").slice(-2).join("."), sort: key, num: isSummary, metric: isSummary,
    cell: (r) => {
      const v = get(r, key);
      return v === undefined ? "–" : typeof v === "number" ? fmt(v) : shortValue(v);
    } };
}

export function currentColumns() {
  const cols = (param("cols", "") || "").split(",").map((c) => c.trim()).filter(Boolean);
  const valid = cols.filter((c) => NAMED[c] || /^(config|summary)(\.[A-Za-z0-9_]+)+$/.test(c));
  return valid.length ? valid : DEFAULT_COLUMNS;
}

// Summary values worth a column: numbers, and one level into objects of numbers (per batch size).
const SKIP_SUMMARY = new Set(["shift_per_channel", "shift_by_layer", "device"]);
function candidatePaths(runs) {
  const config = new Set();
  const summary = new Set();
  for (const run of runs) {
    for (const path of Object.keys(flatten(run.config ?? {}))) config.add(`config.${path}`);
    for (const [k, v] of Object.entries(run.summary ?? {})) {
      if (SKIP_SUMMARY.has(k)) continue;
      if (typeof v === "number") summary.add(`summary.${k}`);
      else if (v && typeof v === "object" && !Array.isArray(v)) {
        for (const [k2, v2] of Object.entries(v)) if (typeof v2 === "number") summary.add(`summary.${k}.${k2}`);
      }
    }
  }
  return { config: [...config].sort(), summary: [...summary].sort() };
}

// ---- rows ------------------------------------------------------------------------------------

function cellFor(col, run, selected, onToggle) {
  if (col.key === "id") {
    return el("td", { class: "num" },
      el("span", { class: "swatch", style: { background: runColour(run.id) }, "aria-hidden": "true" }),
      el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id}` }));
  }
  if (col.key === "name") {
    return el("td", { class: "name" },
      el("a", { href: runUrl(run.id), "data-link": true, class: "run-name", text: run.name }),
      run.sweep_id != null ? el("a", { class: "sweep-link", href: `/sweep?sweep=${run.sweep_id}`,
        "data-link": true, text: `sweep ${run.sweep_id}` }) : null);
  }
  if (col.key === "status") return el("td", { class: "status-cell" }, statusBadge(run.status));
  if (col.key === "progress") {
    const live = !isTerminal(run.status);
    return el("td", { class: "progress-cell" }, live && !unplanned(run) ? progressBar(run.progress) : null,
      live ? el("span", { class: "step", text: `step ${run.step ?? 0}` }) : null);
  }
  if (col.key === "tags") return el("td", { class: "tags" }, (run.tags ?? []).map((t) => el("span", { class: "tag", text: t })));
  return el("td", { class: col.num ? "num" : "cfg", title: col.title ? col.title(run) : null, text: col.cell(run) });
}

function runRow(run, cols, selected, onToggle) {
  const box = el("input", { type: "checkbox", checked: selected.has(run.id),
    "aria-label": `select run ${run.id}`, onchange: (e) => onToggle(run.id, e.target.checked) });
  return el("tr", { dataset: { runId: run.id, status: run.status } },
    el("td", {}, box), cols.map((c) => cellFor(c, run, selected, onToggle)));
}

// ---- toolbar ---------------------------------------------------------------------------------

function filterBar(onApply) {
  const status = el("select", { name: "status", "aria-label": "status" },
    el("option", { value: "", text: "any status" }), STATUSES.map((s) => el("option", { value: s, text: s })));
  const tag = el("input", { type: "search", name: "tag", placeholder: "exact tag", "aria-label": "tag", size: 10 });
  const sweep = el("input", { type: "search", name: "sweep", placeholder: "sweep id", inputmode: "numeric",
    "aria-label": "sweep", size: 7 });
  const text = el("input", { type: "search", name: "q", placeholder: "search names and tags", "aria-label": "search" });
  status.value = param("status", "");
  tag.value = param("tag", "");
  sweep.value = param("sweep", "");
  text.value = param("q", "");
  let timer = null;
  const apply = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      setParams({ status: status.value, tag: tag.value.trim(), sweep: sweep.value.trim(), q: text.value.trim(), page: null });
      onApply();
    }, 250);
  };
  for (const node of [status, tag, sweep, text]) node.addEventListener("input", apply);
  return el("div", { class: "filters" }, text, status, tag, sweep);
}

function currentFilters() {
  const sweep = param("sweep", "");
  return { status: param("status"), tag: param("tag"), sweep: /^\d+$/.test(sweep) ? sweep : null, q: param("q") };
}

function columnPicker(known, onChange) {
  const chosen = new Set(currentColumns());
  const search = el("input", { type: "search", placeholder: "filter fields", "aria-label": "filter columns" });
  const list = el("div", { class: "column-list" });
  const options = [
    ...Object.keys(NAMED).map((k) => [k, NAMED[k].label]),
    ...known.summary.filter((k) => !NAMED[k]).map((k) => [k, k]),
    ...known.config.map((k) => [k, k]),
  ];
  for (const [key, label] of options) {
    list.append(el("label", { class: "column-option", dataset: { key } },
      el("input", { type: "checkbox", name: "col", value: key, checked: chosen.has(key),
        onchange: (e) => {
          const cols = currentColumns().filter((c) => c !== key);
          if (e.target.checked) cols.push(key);
          setParams({ cols: cols.join(",") });
          onChange();
        } }), ` ${label}`));
  }
  search.addEventListener("input", () => {
    const q = search.value.toLowerCase();
    for (const opt of list.children) opt.hidden = !opt.dataset.key.toLowerCase().includes(q);
  });
  return el("details", { class: "column-picker" }, el("summary", { text: "Columns" }),
    el("div", { class: "column-panel" }, search,
      el("button", { type: "button", text: "defaults", onclick: () => { setParams({ cols: null }); onChange(); } }),
      list));
}

function groupPicker(known, onChange) {
  const select = el("select", { name: "group", "aria-label": "group by" },
    el("option", { value: "", text: "no grouping" }),
    known.config.filter((k) => !/\.(name|tags)$/.test(k)).map((k) => el("option", { value: k, text: k.replace(/^config\./, "") })));
  const current = param("group", "");
  if (current && ![...select.options].some((o) => o.value === current)) {
    select.append(el("option", { value: current, text: current.replace(/^config\./, "") }));
  }
  select.value = current;
  select.addEventListener("change", () => {
    setParams({ group: select.value, page: null });
    onChange();
  });
  return el("label", { class: "inline" }, "group by ", select);
}

// "mean ± sd" of a group's metric (the sample sd; a lone value has none).
function statText(s) {
  if (!s || !s.n) return "–";
  return `${fmt(s.mean)}${s.sd == null ? "" : ` ± ${fmt(s.sd)}`}`;
}

// ---- the view --------------------------------------------------------------------------------

// The selection outlives the view: back from a compare view, the same runs are still ticked.
const selected = new Set();

export function renderRuns(root) {
  let runs = [];
  let stopStream = () => {};
  let pollTimer = null;
  let liveKey = "";
  let alive = true;
  let offeredForm = false;
  let known = { config: [], summary: [] };
  const openGroups = new Set();

  const compareButton = el("button", { class: "primary", disabled: true,
    onclick: () => navigate(compareUrl([...selected])) });
  const sweepButton = el("button", { text: "Sweep view", disabled: true,
    onclick: () => navigate(`/sweep?runs=${[...selected].join(",")}`) });
  const tagInput = el("input", { type: "text", name: "bulk-tag", placeholder: "tag", "aria-label": "tag to add or remove", size: 8 });
  const message = el("div", { class: "bulk-message", "aria-live": "polite" });
  const bulk = (action) => async () => {
    const ids = [...selected];
    if (!ids.length) return;
    if (action === "delete" && !window.confirm(`Delete ${ids.length} run${ids.length === 1 ? "" : "s"} and their data?`)) return;
    try {
      const res = await api.bulkRuns(ids, action, action === "delete" ? [] : [tagInput.value.trim()]);
      if (action === "delete") for (const id of res.done) selected.delete(id);
      const skipped = res.skipped.length ? `; skipped ${res.skipped.map((s) => `#${s.id} (${s.reason})`).join(", ")}` : "";
      message.replaceChildren(notice(`${action}: ${res.done.length} run${res.done.length === 1 ? "" : "s"}${skipped}`, res.skipped.length ? "warn" : "info"));
      updateSelection();
      load();
    } catch (exc) {
      message.replaceChildren(notice(`${action}: ${exc.message}`, "error"));
    }
  };
  const tagButton = el("button", { text: "Tag", onclick: bulk("tag") });
  const untagButton = el("button", { text: "Untag", onclick: bulk("untag") });
  const deleteButton = el("button", { text: "Delete", class: "danger", onclick: bulk("delete") });
  const clearButton = el("button", { text: "Clear", onclick: () => { selected.clear(); updateSelection(); draw(); } });
  const newButton = el("button", { text: "New experiment", "aria-expanded": "false" });
  const thead = el("thead");
  const tbody = el("tbody");
  const table = el("table", { class: "runs" }, thead, tbody);
  const status = el("div", { class: "table-status" });
  const pager = el("div", { class: "pager" });
  const pickers = el("div", { class: "pickers" });
  const formHost = el("section", { class: "panel submit-panel", hidden: true });
  const refresh = () => load();
  formHost.append(el("h2", { text: "New experiment" }), submitPanel({ onSubmitted: refresh }));
  newButton.addEventListener("click", () => {
    formHost.hidden = !formHost.hidden;
    newButton.setAttribute("aria-expanded", String(!formHost.hidden));
  });

  const updateSelection = () => {
    compareButton.textContent = `Compare selected (${selected.size})`;
    for (const b of [compareButton, sweepButton, tagButton, untagButton, deleteButton, clearButton]) {
      b.disabled = selected.size === 0;
    }
  };
  const toggle = (id, on) => {
    if (on) selected.add(id);
    else selected.delete(id);
    updateSelection();
  };

  root.append(
    el("div", { class: "toolbar" }, filterBar(() => load()), pickers, el("div", { class: "spacer" }),
      el("button", { text: "Refresh", onclick: refresh }), newButton),
    el("div", { class: "toolbar bulk-bar" }, compareButton, sweepButton, tagInput, tagButton, untagButton,
      deleteButton, clearButton, message),
    formHost,
    el("div", { class: "table-wrap" }, table),
    status, pager);
  updateSelection();

  function header(cols) {
    const sort = param("sort", "-id");
    const desc = sort.startsWith("-");
    const key = sort.replace(/^[-+]/, "");
    const selectAll = el("input", { type: "checkbox", "aria-label": "select all shown runs",
      onchange: (e) => {
        for (const run of runs) toggle(run.id, e.target.checked);
        draw();
      } });
    thead.replaceChildren(el("tr", {}, el("th", {}, selectAll), cols.map((c) => {
      if (!c.sort) return el("th", { text: c.label, title: c.key });
      const active = c.sort === key;
      const next = active && !desc ? `-${c.sort}` : c.sort;
      return el("th", { "aria-sort": active ? (desc ? "descending" : "ascending") : "none", title: c.key },
        el("button", { type: "button", class: `sort${active ? " active" : ""}`, dataset: { sort: c.sort },
          text: `${c.label}${active ? (desc ? " ▼" : " ▲") : ""}`,
          onclick: () => { setParams({ sort: next === "-id" ? null : next, page: null }); load(); } }));
    })));
  }

  function draw() {
    const t0 = performance.now();
    const cols = currentColumns().map(column);
    header(cols);
    if (param("group")) {
      drawGroups(cols);
    } else {
      tbody.replaceChildren(...runs.map((run) => runRow(run, cols, selected, toggle)));
    }
    window.__bnlabTimings = { ...(window.__bnlabTimings ?? {}), table_ms: performance.now() - t0 };
  }

  let groups = [];
  function drawGroups(cols) {
    const metricCols = cols.filter((c) => c.metric);
    const rows = [];
    for (const g of groups) {
      const key = JSON.stringify(g.value);
      const open = openGroups.has(key);
      const cells = cols.map((c) => {
        if (c.key === "name") {
          return el("td", { class: "name" }, el("button", { type: "button", class: "group-toggle",
            "aria-expanded": String(open), text: `${open ? "▾" : "▸"} ${param("group").replace(/^config\./, "")} = ${shortValue(g.value)}`,
            onclick: () => { if (open) openGroups.delete(key); else openGroups.add(key); loadGroupRuns(); } }));
        }
        if (c.key === "id") return el("td", { class: "num group-n", text: `n=${g.n}` });
        if (c.metric) {
          const s = g.metrics[c.key];
          return el("td", { class: "num", title: s && s.n ? `n=${s.n}, min ${fmt(s.min)}, max ${fmt(s.max)}` : "",
            text: statText(s) });
        }
        return el("td");
      });
      const selectGroup = el("input", { type: "checkbox", "aria-label": `select group ${shortValue(g.value)}`,
        checked: g.ids.every((id) => selected.has(id)),
        onchange: (e) => { for (const id of g.ids) toggle(id, e.target.checked); draw(); } });
      rows.push(el("tr", { class: "group-row", dataset: { group: key, n: g.n } }, el("td", {}, selectGroup), cells));
      if (open) {
        for (const run of groupRuns.get(key) ?? []) rows.push(runRow(run, cols, selected, toggle));
        if (g.n > GROUP_ROWS) rows.push(el("tr", {}, el("td", { colspan: cols.length + 1, class: "hint",
          text: `first ${GROUP_ROWS} of ${g.n}; narrow the filter to see the rest` })));
      }
    }
    if (!metricCols.length) {
      rows.push(el("tr", {}, el("td", { colspan: cols.length + 1, class: "hint",
        text: "add summary columns (Columns) to see their mean ± sd per group" })));
    }
    tbody.replaceChildren(...rows);
  }

  const groupRuns = new Map();
  async function loadGroupRuns() {
    const sort = param("sort");
    await Promise.all(groups.filter((g) => openGroups.has(JSON.stringify(g.value))).map(async (g) => {
      const body = await api.listRuns({ ids: g.ids.slice(0, GROUP_ROWS).join(","), sort, limit: GROUP_ROWS, lean: 1 });
      groupRuns.set(JSON.stringify(g.value), runList(body).runs);
    }));
    runs = [...groupRuns.values()].flat();
    learn(runs);
    if (alive) draw();
  }

  function replaceRun(run) {
    const index = runs.findIndex((r) => r.id === run.id);
    if (index < 0) return;
    runs[index] = run;
    const row = tbody.querySelector(`tr[data-run-id="${run.id}"]`);
    if (row) row.replaceWith(runRow(run, currentColumns().map(column), selected, toggle));
  }

  // In-place update from an event: status and progress move without redrawing the table.
  function onEvent(event) {
    const run = runs.find((r) => r.id === event.runId);
    if (!run) return;
    if (event.progress !== null) run.progress = event.progress;
    if (event.step !== null) run.step = event.step;
    if (event.status && event.status !== run.status) {
      run.status = event.status;
      if (isTerminal(event.status)) {
        api.getRun(run.id).then(replaceRun).catch(() => {});
        return;
      }
    }
    replaceRun(run);
  }

  // One stream for the live runs on screen, reopened only when that set changes.
  function follow() {
    clearTimeout(pollTimer);
    const live = runs.filter((r) => !isTerminal(r.status)).map((r) => r.id);
    const key = live.join(",");
    if (key !== liveKey) {
      stopStream();
      stopStream = () => {};
      liveKey = key;
      if (live.length && alive) stopStream = watch(live, onEvent, { onClose: () => { liveKey = ""; } });
    }
    if (live.length && alive) pollTimer = setTimeout(load, POLL_MS);
  }

  function drawPickers() {
    pickers.replaceChildren(columnPicker(known, draw), groupPicker(known, load));
  }

  function learn(list) {
    const found = candidatePaths(list);
    const before = known.config.length + known.summary.length;
    known = { config: [...new Set([...known.config, ...found.config])].sort(),
      summary: [...new Set([...known.summary, ...found.summary])].sort() };
    if (known.config.length + known.summary.length !== before || !pickers.childElementCount) drawPickers();
  }

  function drawPager(count) {
    const page = Math.max(0, Number(param("page", "0")) || 0);
    const pages = Math.max(1, Math.ceil(count / PAGE));
    const go = (p) => () => { setParams({ page: p > 0 ? p : null }); load(); };
    pager.replaceChildren(...(pages > 1 ? [
      el("button", { text: "‹ prev", disabled: page === 0, onclick: go(page - 1) }),
      el("span", { class: "page-of", text: ` page ${page + 1} of ${pages} ` }),
      el("button", { text: "next ›", disabled: page >= pages - 1, onclick: go(page + 1) }),
    ] : []));
  }

  async function load() {
    clearTimeout(pollTimer);
    const filters = currentFilters();
    try {
      if (param("group")) {
        const metrics = currentColumns().filter((c) => column(c).metric).join(",");
        const body = await api.runGroups({ ...filters, group_by: param("group"), metrics });
        if (!alive) return;
        groups = body.groups;
        if (!known.config.length) learn(runList(await api.listRuns({ ...filters, limit: 20 })).runs);
        status.replaceChildren(`${body.count} run${body.count === 1 ? "" : "s"} in ${groups.length} group${groups.length === 1 ? "" : "s"}`);
        pager.replaceChildren();
        await loadGroupRuns();
        if (!runs.length) draw();
        follow();
        return;
      }
      const page = Math.max(0, Number(param("page", "0")) || 0);
      const { runs: rows, count } = runList(await api.listRuns({ ...filters, sort: param("sort"),
        offset: page * PAGE, limit: PAGE, lean: 1 }));
      if (!alive) return;
      runs = rows;
      learn(runs);
      draw();
      const first = page * PAGE + 1;
      status.replaceChildren(count > runs.length
        ? `runs ${first}–${first + runs.length - 1} of ${count}`
        : `${count} run${count === 1 ? "" : "s"}`);
      drawPager(count);
      if (!count && !param("status") && !param("q") && !param("tag") && !param("sweep")) {
        // Opened once, on the first empty answer: a later poll must not reopen a form the
        // user closed.
        if (!offeredForm) formHost.hidden = false;
        offeredForm = true;
        newButton.setAttribute("aria-expanded", String(!formHost.hidden));
        status.replaceChildren(notice("No runs yet: submit one below or start from a preset.", "info"));
      }
      follow();
      document.body.dataset.ready = "runs";
    } catch (exc) {
      status.replaceChildren(notice(`could not load runs: ${exc.message}`, "error"));
      if (alive) pollTimer = setTimeout(load, POLL_MS);
    }
  }

  drawPickers();
  load();
  return () => {
    alive = false;
    stopStream();
    clearTimeout(pollTimer);
    delete document.body.dataset.ready;
  };
}
