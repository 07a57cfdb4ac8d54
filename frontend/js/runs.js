// The runs table: filters (status, tag, sweep, text) kept in the URL, multi-select for the
// compare view, progress bars that move live, and the submit form above it.

import * as api from "./api.js";
import { el, fmt, isTerminal, notice, pct, progressBar, statusBadge } from "./dom.js";
import { shortValue } from "./fields.js";
import { compareUrl, navigate, param, runUrl, setParams } from "./state.js";
import { watch } from "./stream.js";
import { submitPanel } from "./submit.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "diverged"];
const PAGE = 100;
const MAX_LIMIT = 500; // the API's page cap
const POLL_MS = 5000; // safety net beside SSE while runs are live; stops when none are

export function runList(data) {
  if (Array.isArray(data)) return { runs: data, count: data.length };
  const runs = data?.data ?? data?.runs ?? data?.items ?? [];
  return { runs, count: data?.count ?? data?.total ?? runs.length };
}

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

function configCells(config) {
  const m = config?.model ?? {};
  const d = m.dropout ?? {};
  const bn = m.batchnorm ?? {};
  const dropout = (m.block ?? []).includes("dropout") || m.head_dropout != null
    ? `${d.kind} ${fmt(d.rate, 2)}${d.mask === "per_batch" ? " /batch" : ""}${m.head_dropout != null ? ` head ${m.head_dropout}` : ""}`
    : "none";
  return [
    config?.dataset?.name ?? "–",
    `${m.arch ?? ""} ${widthsText(m.widths ?? [])}`,
    shortValue(m.block ?? []),
    dropout,
    bn.momentum === null ? "cumul." : fmt(bn.momentum, 2),
  ];
}

function runRow(run, selected, onToggle) {
  const s = run.summary ?? {};
  const tm = trainModeAcc(s);
  const box = el("input", { type: "checkbox", checked: selected.has(run.id),
    "aria-label": `select run ${run.id}`, onchange: (e) => onToggle(run.id, e.target.checked) });
  const live = !isTerminal(run.status);
  return el("tr", { dataset: { runId: run.id, status: run.status } },
    el("td", {}, box),
    el("td", { class: "num" }, el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id}` })),
    el("td", { class: "name" },
      el("a", { href: runUrl(run.id), "data-link": true, class: "run-name", text: run.name }),
      run.sweep_id != null ? el("a", { class: "sweep-link", href: `/?sweep=${run.sweep_id}`,
        "data-link": true, text: `sweep ${run.sweep_id}` }) : null),
    el("td", { class: "status-cell" }, statusBadge(run.status)),
    el("td", { class: "progress-cell" }, live ? progressBar(run.progress) : null,
      live ? el("span", { class: "step", text: `step ${run.step ?? 0}` }) : null),
    el("td", { class: "tags" }, (run.tags ?? []).map((t) => el("span", { class: "tag", text: t }))),
    configCells(run.config).map((c) => el("td", { class: "cfg", text: c })),
    el("td", { class: "num", text: pct(s.test_acc_eval) }),
    el("td", { class: "num", title: tm.title, text: tm.text }),
    el("td", { class: "num", text: pct(s.test_acc_recalibrated) }),
  );
}

const HEADERS = ["", "id", "name", "status", "progress", "tags", "data", "model", "block",
  "dropout", "BN mom.", "test eval", "test train-mode", "test recal."];

function filterBar(onApply) {
  const status = el("select", { name: "status", "aria-label": "status" },
    el("option", { value: "", text: "any status" }), STATUSES.map((s) => el("option", { value: s, text: s })));
  const tag = el("input", { type: "search", name: "tag", placeholder: "tag", "aria-label": "tag" });
  const sweep = el("input", { type: "search", name: "sweep", placeholder: "sweep id", inputmode: "numeric",
    "aria-label": "sweep", size: 8 });
  const text = el("input", { type: "search", name: "q", placeholder: "search names", "aria-label": "text" });
  status.value = param("status", "");
  tag.value = param("tag", "");
  sweep.value = param("sweep", "");
  text.value = param("q", "");
  let timer = null;
  const apply = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      setParams({ status: status.value, tag: tag.value.trim(), sweep: sweep.value.trim(), q: text.value.trim() });
      onApply();
    }, 250);
  };
  for (const node of [status, tag, sweep, text]) node.addEventListener("input", apply);
  return el("div", { class: "filters" }, status, tag, sweep, text);
}

function currentFilters(limit) {
  const sweep = param("sweep", "");
  return { status: param("status"), tag: param("tag"), sweep: /^\d+$/.test(sweep) ? sweep : null,
    text: param("q"), limit };
}

// The selection outlives the view: back from a compare view, the same runs are still ticked.
const selected = new Set();

export function renderRuns(root) {
  let runs = [];
  let stopStream = () => {};
  let pollTimer = null;
  let liveKey = "";
  let limit = PAGE;
  let alive = true;
  let offeredForm = false;

  const compareButton = el("button", { class: "primary", disabled: true,
    onclick: () => navigate(compareUrl([...selected])) });
  const newButton = el("button", { text: "New experiment", "aria-expanded": "false" });
  const tbody = el("tbody");
  const status = el("div", { class: "table-status" });
  const formHost = el("section", { class: "panel submit-panel", hidden: true });
  const refresh = () => load();
  formHost.append(el("h2", { text: "New experiment" }), submitPanel({ onSubmitted: refresh }));
  newButton.addEventListener("click", () => {
    formHost.hidden = !formHost.hidden;
    newButton.setAttribute("aria-expanded", String(!formHost.hidden));
  });

  const selectAll = el("input", { type: "checkbox", "aria-label": "select all shown runs",
    onchange: (e) => {
      for (const run of runs) toggle(run.id, e.target.checked);
      draw();
    } });
  const updateCompare = () => {
    compareButton.textContent = `Compare selected (${selected.size})`;
    compareButton.disabled = selected.size === 0;
  };
  const toggle = (id, on) => {
    if (on) selected.add(id);
    else selected.delete(id);
    updateCompare();
  };

  root.append(
    el("div", { class: "toolbar" }, filterBar(refresh), el("div", { class: "spacer" }),
      el("button", { text: "Refresh", onclick: refresh }), newButton, compareButton),
    formHost,
    el("div", { class: "table-wrap" },
      el("table", { class: "runs" },
        el("thead", {}, el("tr", {}, el("th", {}, selectAll), HEADERS.slice(1).map((h) => el("th", { text: h })))),
        tbody)),
    status);
  updateCompare();

  function draw() {
    tbody.replaceChildren(...runs.map((run) => runRow(run, selected, toggle)));
  }

  function replaceRun(run) {
    const index = runs.findIndex((r) => r.id === run.id);
    if (index < 0) return;
    runs[index] = run;
    const row = tbody.querySelector(`tr[data-run-id="${run.id}"]`);
    if (row) row.replaceWith(runRow(run, selected, toggle));
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

  async function load() {
    clearTimeout(pollTimer);
    try {
      const { runs: page, count } = runList(await api.listRuns(currentFilters(limit)));
      if (!alive) return;
      runs = page;
      draw();
      status.replaceChildren(count > runs.length ? `showing ${runs.length} of ${count} runs ` : `${count} run${count === 1 ? "" : "s"}`);
      if (count > runs.length && limit < MAX_LIMIT) {
        status.append(el("button", { text: "show more", onclick: () => {
          limit = Math.min(MAX_LIMIT, limit + PAGE);
          load();
        } }));
      }
      if (!count && !param("status") && !param("q") && !param("tag") && !param("sweep")) {
        // Opened once, on the first empty answer: a later poll must not reopen a form the
        // user closed.
        if (!offeredForm) formHost.hidden = false;
        offeredForm = true;
        newButton.setAttribute("aria-expanded", String(!formHost.hidden));
        status.replaceChildren(notice("No runs yet: submit one below or start from a preset.", "info"));
      }
      follow();
    } catch (exc) {
      status.replaceChildren(notice(`could not load runs: ${exc.message}`, "error"));
      if (alive) pollTimer = setTimeout(load, POLL_MS);
    }
  }

  load();
  return () => {
    alive = false;
    stopStream();
    clearTimeout(pollTimer);
  };
}
