// One run (/runs/ID): every curve it recorded, the per-channel variance-shift histogram of the
// last probe, the summary, the error text, and cancel / retry / delete / export / CSV.

import * as api from "./api.js";
import { DASH, SPARSE_METRICS, colour, layout, line, measuredOnly, purgeAll, render } from "./charts.js";
import { depthTicks, pickLayers, stagesOf } from "./compare_tools.js";
import { downloadBlob, el, fmt, isTerminal, notice, pct, plotText, progressBar, statusBadge, unplanned } from "./dom.js";
import { flagParam, navigate, param, runUrl, setParams } from "./state.js";
import { watch } from "./stream.js";
import { renderStory, runContext } from "./story.js";

const MAX_POINTS = 2000;
const REFRESH_MS = 1500;
const MAX_LAYER_CHARTS = 12; // deep nets (50-300 BN layers): one stage or layer at a time
const MAX_FLAT_MENU = 24; // more layers than this: the layer menu lists one stage at a time

// ---- CSV -------------------------------------------------------------------------------------

function csvCell(value) {
  if (value === null || value === undefined) return "";
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function metricsCsv(columns) {
  const keys = ["step", ...Object.keys(columns).filter((k) => k !== "step")];
  const rows = (columns.step ?? []).map((_, i) => keys.map((k) => csvCell(columns[k]?.[i])).join(","));
  return [keys.join(","), ...rows].join("\n") + "\n";
}

export function layersCsv(layers) {
  const keys = ["train_mean", "train_var", "running_mean", "running_var", "eval_mean", "eval_var",
    "shift", "grad_norm", "shift_li", "shift_floor", "shift_li_floor", "shift_log_q1",
    "shift_log_median", "shift_log_q3"];
  const lines = [["layer", "name", "step", ...keys].join(",")];
  for (const layer of layers) {
    layer.step.forEach((step, i) => {
      lines.push([layer.index, csvCell(layer.name), step, ...keys.map((k) => csvCell(layer[k]?.[i]))].join(","));
    });
  }
  return `${lines.join("\n")}\n`;
}

async function downloadCsv(id) {
  // The full series, not the downsampled view.
  const [metrics, layers] = await Promise.all([api.getMetrics(id), api.getLayers(id)]);
  downloadBlob(new Blob([metricsCsv(metrics.columns)], { type: "text/csv" }), `bnlab-run-${id}-metrics.csv`);
  downloadBlob(new Blob([layersCsv(layers.layers ?? [])], { type: "text/csv" }), `bnlab-run-${id}-layers.csv`);
}

// ---- panels ------------------------------------------------------------------------------------

// "2026-11-23T19:25:56.340652+00:00" → "2026-11-23 19:25:56" (server time, as stored).
function when(stamp) {
  return stamp ? String(stamp).replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC") : "–";
}

function facts(run) {
  const rows = [
    ["status", statusBadge(run.status)],
    // engine: trained by a bnlab worker from its config; script: a user's own loop (bnlab SDK)
    ["kind", run.kind === "script" ? "script (bnlab SDK in the user's training loop)" : "engine"],
    ["progress", unplanned(run) ? `step ${run.step ?? 0} (length not given: bnlab.init(total_steps=...))`
      : isTerminal(run.status) ? pct(run.progress) : el("span", {}, progressBar(run.progress),
        ` ${pct(run.progress)} · step ${run.step ?? 0}`)],
    ["attempt", String(run.attempt ?? 0)],
    ["device", run.device ?? "–"],
    ["host", run.host ?? "–"],
    ["created", when(run.created_at)],
    ["started", when(run.started_at)],
    ["finished", when(run.finished_at)],
    ["tags", (run.tags ?? []).join(", ") || "–"],
    ["sweep", run.sweep_id != null ? String(run.sweep_id) : "–"],
  ];
  return el("dl", { class: "facts" }, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}

function summaryPanel(run) {
  const s = run.summary;
  if (!s) return notice(isTerminal(run.status) ? "No summary recorded." : "The summary appears when the run ends.");
  const bySize = (obj) => Object.entries(obj ?? {}).sort(([a], [b]) => Number(a) - Number(b));
  const modes = bySize(s.test_acc_train_mode);
  const bnOnly = bySize(s.test_acc_train_bn);
  const rows = [
    ["test accuracy, eval mode", pct(s.test_acc_eval)],
    ...modes.map(([bs, v]) => [`test accuracy, model.train() @ batch ${bs}`, pct(v)]),
    ...bnOnly.map(([bs, v]) => [`test accuracy, BN-only train mode @ batch ${bs}`, pct(v)]),
    ["test accuracy, BN recalibrated", pct(s.test_acc_recalibrated)],
    ["steps / s", fmt(s.steps_per_s, 1)],
    ["wall time", s.wall_s != null ? `${fmt(s.wall_s, 1)} s` : "–"],
    ["device", s.device ?? "–"],
  ];
  const shifts = Object.entries(s.shift_by_layer ?? {});
  return el("div", {},
    el("table", { class: "kv" }, el("tbody", {}, rows.map(([k, v]) =>
      el("tr", {}, el("th", { text: k }), el("td", { class: "num", text: v }))))),
    shifts.length ? shiftTables(shifts, run.layer_places) : null);
}

// Final shift per BN layer: one table, or for a deep net one collapsed table per stage whose
// heading gives the stage's range (a 300-row table would bury the rest of the page).
function shiftTables(shifts, places) {
  const table = (entries) => el("table", { class: "kv" },
    el("thead", {}, el("tr", {}, el("th", { text: "BN layer" }), el("th", { text: "final shift (bnlab per-channel)" }))),
    el("tbody", {}, entries.map(([name, v]) =>
      el("tr", {}, el("td", { text: name }), el("td", { class: "num", text: fmt(v) })))));
  if (shifts.length <= MAX_FLAT_MENU) return table(shifts);
  const byName = new Map((places ?? []).map((p) => [p.name, p]));
  const names = shifts.map(([name]) => name);
  const stages = stagesOf(names, names.map((_, i) => i), names.map((n) => byName.get(n) ?? n));
  return el("div", { class: "shift-stages" }, stages.map((st) => {
    const values = st.indices.map((i) => shifts[i][1]).filter(Number.isFinite);
    const range = values.length ? `, shift ${fmt(Math.min(...values))}–${fmt(Math.max(...values))}` : "";
    return el("details", { class: "stage-shifts", dataset: { stage: st.stage } },
      el("summary", { text: `${st.stage}: ${st.indices.length} BN layers${range}` }),
      table(st.indices.map((i) => shifts[i])));
  }));
}

function actions(run, reload, setMessage, exportFormats = []) {
  const act = (label, fn, { danger = false } = {}) => el("button", { text: label, class: danger ? "danger" : null,
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await fn();
      } catch (exc) {
        setMessage(notice(`${label}: ${exc.message}`, "error"));
      } finally {
        event.target.disabled = false;
      }
    } });
  const live = !isTerminal(run.status);
  return el("div", { class: "actions" },
    live ? act("Cancel", async () => { await api.cancelRun(run.id); await reload(); }) : null,
    act("Retry", async () => { const created = await api.retryRun(run.id); navigate(runUrl(created.id)); }),
    !live ? act("Delete", async () => {
      if (!window.confirm(`Delete run #${run.id} and its data?`)) return;
      await api.deleteRun(run.id);
      navigate("/");
    }, { danger: true }) : null,
    act("Series CSV", () => downloadCsv(run.id)),
    // Only the export files the server has (GET /exports); ONNX exists when the worker had onnx.
    exportFormats.includes("npz") ? act("Export .npz", async () =>
      downloadBlob(await api.exportRun(run.id, "npz"), `bnlab-run-${run.id}.npz`)) : null,
    exportFormats.includes("onnx") ? act("Export .onnx", async () =>
      downloadBlob(await api.exportRun(run.id, "onnx"), `bnlab-run-${run.id}.onnx`)) : null);
}

// ---- charts ------------------------------------------------------------------------------------

function chart(id, title) {
  return el("div", { class: "chart-box" }, el("div", { class: "chart", id, "aria-label": title }));
}

function hasValues(values) {
  return Array.isArray(values) && values.some(Number.isFinite);
}

// The run's charts as [id, traces, title, yTitle, {logy}]: only those with data, so a network
// without BN (its layers carry grad_norm alone) shows no empty "BN layer" charts.
function chartSpecs(run, m, layers, logy, sel) {
  const tag = `#${run.id}`;
  const x = m.step ?? [];
  const mline = (key, color, dash = "solid") => (hasValues(m[key]) ? [line({
    ...(SPARSE_METRICS.has(key) ? measuredOnly({ x, y: m[key] }) : { x, y: m[key] }),
    name: `${tag} ${key}`, color, dash, meta: { run: run.id, series: key } })] : []);
  const specs = [
    ["chart-loss", [...mline("train_loss", colour(0)), ...mline("val_loss", colour(1))], "loss", "loss",
      { logy }],
    ["chart-acc", [...mline("train_acc", colour(0)), ...mline("val_acc", colour(1)),
      ...mline("val_acc_train_mode", colour(1), "dash")], "accuracy (dashed: validation in train mode)",
    "accuracy"],
    // Log axis: a schedule spans decades (warm-up, step decay, cosine), a linear axis flattens it.
    ["chart-lr", mline("lr", colour(2)), "learning rate (log axis)", "lr", { logy: true }],
    ["chart-gradcos", mline("grad_cos", colour(4)), "gradient cosine to the large-batch gradient (higher = less noise)", "cosine"],
  ];
  const varKeys = ["train_var", "eval_var", "running_var"];
  // Per-layer charts and curves: every layer of a small net; of a deep one, the picked stage or
  // layer (at most MAX_LAYER_CHARTS); the by-depth charts below show every layer.
  const drawn = layers.filter((l) => sel.lines.has(l.index));
  for (const layer of drawn.filter((l) => varKeys.some((k) => hasValues(l[k])))) {
    specs.push([`chart-layer-${layer.index}`, varKeys.map((key) =>
      line({ x: layer.step, y: layer[key], name: `${tag} ${key}`, color: colour(layer.index), dash: DASH[key],
        meta: { run: run.id, layer: layer.index, series: key } })),
    `BN layer ${layer.index} · ${layer.name} — variance (solid train, dashed inference, dotted running)`,
    "variance", { logy }]);
  }
  const perLayer = (key, dash = "solid") => drawn.filter((l) => hasValues(l[key])).map((layer) => line({
    x: layer.step, y: layer[key], name: `${tag} ${layer.name} ${key}`, color: colour(layer.index), dash,
    meta: { run: run.id, layer: layer.index, series: key } }));
  specs.push(["chart-means", [...perLayer("train_mean"), ...perLayer("eval_mean", "dash")],
    "BN input mean per layer (solid train, dashed inference)", "mean"]);
  specs.push(["chart-shift", perLayer("shift"),
    "bnlab per-channel shift per layer (no shift: its noise floor, > 1)", "shift",
    { logy, yrange: withoutFirstProbe(layers, "shift", logy) }]);
  specs.push(["chart-grad", perLayer("grad_norm"), "gradient norm of each layer's preceding weight",
    "grad norm", { logy }]);
  specs.push(["chart-shift-depth", shiftByDepth(run, layers),
    "final shift by depth, every BN layer (bnlab per-channel; no shift: its noise floor)", "shift",
    { logy, xTitle: "layer (depth)", xaxis: depthTicks(sel.names, sel.places) }]);
  specs.push(["chart-grad-depth", gradByDepth(run, layers), "gradient norm by depth (last probe)", "grad norm",
    { logy, xTitle: "layer (depth)", xaxis: depthTicks(sel.names, sel.places) }]);
  return specs.filter(([, traces]) => traces.length);
}

// The y range of `key` over every layer's points after its first probe: the first probe meets a
// freshly initialised net whose shift can be 10-100x the rest, which would squash the curves.
// Null (autorange) when the first probe is not an outlier.
export function withoutFirstProbe(layers, key, logy) {
  const rest = layers.flatMap((l) => (l[key] ?? []).slice(1)).filter((v) => Number.isFinite(v) && (!logy || v > 0));
  const first = layers.map((l) => (l[key] ?? [])[0]).filter(Number.isFinite);
  if (rest.length < 2 || !first.length) return null;
  let lo = Math.min(...rest);
  let hi = Math.max(...rest);
  if (Math.max(...first) <= hi && Math.min(...first) >= lo) return null;
  if (logy) {
    [lo, hi] = [Math.log10(lo), Math.log10(hi)];
  }
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 0.1;
  return [lo - pad, hi + pad];
}

// One value per layer against depth (x: the layer index, ticks at the stage starts, the name in
// the hover: 300 names would not fit as ticks).
function byDepth(run, layers, value, series) {
  const points = layers.map((l) => [l, value(l)]).filter(([, v]) => Number.isFinite(v));
  if (!points.length) return [];
  const trace = line({ x: points.map(([l]) => l.index), y: points.map(([, v]) => v),
    name: `#${run.id} ${series}`, color: colour(0), meta: { run: run.id, series } });
  trace.text = points.map(([l]) => plotText(l.name));
  trace.hovertemplate = "layer %{x} · %{text}: %{y:.4g}<extra></extra>";
  return [{ ...trace, type: "scatter", mode: "lines+markers" }];
}

// Last recorded grad_norm per layer against depth: vanishing/exploding gradients at a glance.
function gradByDepth(run, layers) {
  return byDepth(run, layers, (l) => (l.grad_norm ?? []).filter(Number.isFinite).at(-1), "grad_norm_by_depth");
}

// Final shift per BN layer against depth: the summary's value when the run ended, else the last
// probe's.
function shiftByDepth(run, layers) {
  const final = run.summary?.shift_by_layer ?? {};
  return byDepth(run, layers, (l) => (Number.isFinite(final[l.name]) ? final[l.name]
    : (l.shift ?? []).filter(Number.isFinite).at(-1)), "shift_by_depth");
}

function drawCharts(grid, run, metrics, layers, logy, sel) {
  const rev = `run:${run.id}:${logy}`;
  const plots = chartSpecs(run, metrics, layers, logy, sel);
  const histogram = shiftHistogram(run, new Set(layers.filter((l) => sel.lines.has(l.index)).map((l) => l.name)));
  const ids = [...plots.map(([id]) => id), ...(histogram ? ["chart-hist"] : [])].join(",");
  if (grid.dataset.charts !== ids) { // a new set of charts (first data, first BN probe, summary)
    purgeAll(grid);
    grid.replaceChildren(...plots.map(([id, , title]) => chart(id, title)));
    if (histogram) grid.append(chart("chart-hist", "per-channel shift"));
    grid.dataset.charts = ids;
  }
  const drawing = plots.map(([id, traces, title, yTitle, opts = {}]) => {
    const chartLayout = layout({ title: opts.yrange ? `${title} (y fitted without the first probe)` : title,
      yTitle, xTitle: opts.xTitle, logy: Boolean(opts.logy), showlegend: traces.length > 1 && traces.length <= 12,
      extra: opts.yrange ? { yaxis: { title: { text: yTitle }, type: opts.logy ? "log" : "linear",
        range: opts.yrange, exponentformat: "power" } } : {} });
    if (opts.xaxis) chartLayout.xaxis = { ...chartLayout.xaxis, ...opts.xaxis }; // stage ticks, themed grid
    return render(grid.querySelector(`#${id}`), traces, chartLayout,
      { uirevision: rev, filename: `bnlab-run${run.id}-${id.slice(6)}` });
  });
  const histDiv = grid.querySelector("#chart-hist");
  if (histogram && histDiv) {
    drawing.push(render(histDiv, histogram, layout({ title: "per-channel variance shift, last probe",
      xTitle: "shift", yTitle: "channels", showlegend: true, extra: { barmode: "overlay", hovermode: "closest" } }),
    { uirevision: rev, filename: `bnlab-run${run.id}-shift-histogram` }));
  }
  return Promise.all(drawing);
}

// Per-channel shift histograms of the layers drawn (a deep net: the picked stage's, at most
// MAX_LAYER_CHARTS, not 300 overlaid histograms).
function shiftHistogram(run, drawnNames) {
  const perChannel = run.summary?.shift_per_channel;
  if (!perChannel || !Object.keys(perChannel).length) return null;
  const entries = Object.entries(perChannel).filter(([name]) => drawnNames.has(name));
  if (!entries.length) return null;
  return entries.map(([name, values], i) => ({
    type: "histogram", x: values, name: plotText(`#${run.id} ${name}`), opacity: 0.6,
    marker: { color: colour(i) }, nbinsx: 40, meta: { run: run.id, series: "shift_per_channel", layer: name },
  }));
}

// ---- deep nets: which layers get their own charts -----------------------------------------------

// Every layer of a net with at most MAX_LAYER_CHARTS layers; of a deeper one (ResNets, DenseNets:
// 50-300 BN layers) the stage or layer picked in the URL (?stage=, ?layer=), at most
// MAX_LAYER_CHARTS of them. The by-depth charts always show every layer.
export function selectLayers(run, layers) {
  const byIndex = new Map(layers.map((l) => [l.index, l]));
  const count = Math.max(layers.length ? Math.max(...layers.map((l) => l.index)) + 1 : 0,
    run.layer_names?.length ?? 0);
  const names = Array.from({ length: count }, (_, i) => byIndex.get(i)?.name ?? run.layer_names?.[i] ?? "");
  const places = Array.isArray(run.layer_places) ? run.layer_places : null;
  const withVar = layers.filter((l) => ["train_var", "eval_var"].some((k) => hasValues(l[k]))).map((l) => l.index);
  const indices = withVar.length ? withVar : layers.map((l) => l.index);
  const pick = pickLayers(names, indices, places,
    { stage: param("stage", "all"), layer: param("layer", "all"), max: MAX_LAYER_CHARTS });
  const deep = layers.length > MAX_LAYER_CHARTS;
  return { names, places, deep, lines: new Set(deep ? pick.shown : layers.map((l) => l.index)), ...pick };
}

// The stage menu, then that stage's layers (never 300 names in one menu); null for small nets.
function layerControls(sel, onPick) {
  if (!sel.deep) return null;
  const many = sel.stages.length > 1;
  const stageSel = el("select", { name: "stage", "aria-label": "stage" },
    el("option", { value: "all", text: many ? "all stages" : "all layers" }),
    many ? sel.stages.map((st) => el("option", { value: st.stage, text: `${st.stage} (${st.indices.length})` })) : []);
  stageSel.value = sel.stage;
  const { pool } = sel;
  const layerSel = el("select", { name: "layer", "aria-label": "layer" },
    el("option", { value: "all", text: `all ${pool.length} layers${pool.length > MAX_LAYER_CHARTS ? ` (first ${MAX_LAYER_CHARTS} drawn)` : ""}` }),
    pool.length <= MAX_FLAT_MENU || sel.stage !== "all"
      ? pool.map((i) => el("option", { value: String(i), text: `${i}: ${sel.names[i]}` })) : []);
  layerSel.value = [...layerSel.options].some((o) => o.value === param("layer")) ? param("layer") : "all";
  const wrap = el("label", { class: "inline layer-pick" }, "layers ", stageSel, layerSel);
  wrap.addEventListener("change", (event) => {
    setParams({ stage: stageSel.value === "all" ? null : stageSel.value,
      layer: event.target.name === "stage" || layerSel.value === "all" ? null : layerSel.value });
    onPick();
  });
  return wrap;
}

// ---- the view ----------------------------------------------------------------------------------

export function renderRun(root, id) {
  let alive = true;
  let stopStream = () => {};
  let timer = null;
  const head = el("div", { class: "view-head" });
  const message = el("div", { class: "message" });
  const top = el("div", { class: "run-top" });
  const grid = el("div", { class: "chart-grid" });
  const story = el("div", { class: "story" }); // story.js: the argument, as on the compare view
  const config = el("pre", { class: "config" });
  let last = null; // the latest data, redrawn when the log-y toggle or the picked layers change
  const logy = el("input", { type: "checkbox", name: "logy", checked: flagParam("logy") });
  logy.addEventListener("change", () => {
    setParams({ logy: logy.checked });
    redraw();
  });
  const picker = el("span", { class: "layer-picker" });
  const layerNote = el("div", { class: "layer-note" });
  let pickKey = null; // the menus are rebuilt only when their content changes (live runs reload)
  const bar = el("div", { class: "toolbar run-controls" }, el("label", { class: "inline",
    title: "log scale for loss, variance, shift and gradient-norm charts" }, logy, " log y"), picker);

  function redraw() {
    if (!last) return Promise.resolve();
    const sel = selectLayers(last.run, last.layers);
    const key = JSON.stringify([sel.names, sel.stage, sel.pool, sel.shown, sel.deep]);
    if (key !== pickKey) {
      pickKey = key;
      const controls = layerControls(sel, redraw);
      picker.replaceChildren(...(controls ? [controls] : []));
      layerNote.replaceChildren(...(sel.deep && sel.pool.length > sel.shown.length && sel.shown.length > 1
        ? [notice(`${sel.pool.length} BN layers: the first ${sel.shown.length} have their own charts; pick a `
          + "stage or a layer above. The by-depth charts show every layer.", "info")] : []));
    }
    return drawCharts(grid, last.run, last.metrics, last.layers, logy.checked, sel);
  }

  root.append(head, message, top, story, bar, layerNote, grid,
    el("section", { class: "panel" }, el("h2", { text: "Config" }), config));

  async function load() {
    timer = null;
    let run;
    let metrics;
    let layers;
    try {
      [run, metrics, layers] = await Promise.all([api.getRun(id), api.getMetrics(id, { maxPoints: MAX_POINTS }),
        api.getLayers(id, { maxPoints: MAX_POINTS })]);
    } catch (exc) {
      if (alive) message.replaceChildren(notice(`could not load run #${id}: ${exc.message}`, "error"));
      return;
    }
    if (!alive) return;
    const exportFormats = run.status === "succeeded"
      ? (await api.listExports(run.id).catch(() => ({ formats: [] }))).formats : [];
    if (!alive) return;
    head.replaceChildren(el("h1", {}, el("span", { class: "run-id", text: `#${run.id} ` }),
      el("span", { class: "run-name", text: run.name })), actions(run, load, (n) => message.replaceChildren(n), exportFormats));
    top.replaceChildren(
      el("section", { class: "panel" }, el("h2", { text: "Run" }), facts(run),
        // A user's cancel is a status, not an error; only real failures show the error text.
        run.status === "cancelled" ? notice(run.cancel_requested ? "Cancelled by a user." : "Cancelled.", "info")
          : run.error ? el("pre", { class: "error-text", text: run.error }) : null),
      el("section", { class: "panel" }, el("h2", { text: "Summary" }), summaryPanel(run)));
    config.textContent = JSON.stringify(run.config, null, 2);
    last = { run, metrics: metrics.columns, layers: layers.layers ?? [] };
    await redraw();
    if (!alive) return;
    await renderStory(story, runContext(last.run, last.metrics, last.layers), { single: true });
    if (!alive) return;
    document.body.dataset.ready = "run";
    if (isTerminal(run.status)) {
      stopStream();
      stopStream = () => {};
    } else if (!stopStream.live) {
      stopStream = watch([run.id], () => {
        if (!timer && alive) timer = setTimeout(load, REFRESH_MS);
      });
      stopStream.live = true;
    }
  }

  load();
  return () => {
    alive = false;
    stopStream();
    clearTimeout(timer);
    delete document.body.dataset.ready;
  };
}
