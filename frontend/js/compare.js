// The compare view (/compare?runs=1,2,...): per BN layer, the train-time variance (solid)
// against the inference-time variance (dashed) of every selected run, one colour per run;
// the variance shift by layer; eval-mode versus train-mode accuracy; the config fields that
// differ. Layer/stage, log-y, smoothing, running_var, grouping (seeds or any config field, with
// a min/max or ±sd band), hidden runs, the x-axis (step, epoch, wall time) and shared zoom are
// URL parameters. With shared zoom on, zooming one chart zooms every time chart and re-fetches
// the runs' series inside the step window (min/max buckets there: detail gained, no extreme lost).

import * as api from "./api.js";
import { DASH, SPARSE_METRICS, band, layout, line, measuredOnly, purgeAll, render, runColour,
  smooth } from "./charts.js";
import { aggregateBand, groupEntries, stagesOf, stepRange, xMapper } from "./compare_tools.js";
import { configValue, differingPaths, lastFinite } from "./diff.js";
import { el, fmt, isTerminal, notice, pct, statusBadge } from "./dom.js";
import { shortValue } from "./fields.js";
import { flagParam, param, runUrl, setParams } from "./state.js";
import { watch } from "./stream.js";
import { STORY_LAYER_KEYS, renderStory } from "./story.js";

const MAX_POINTS = 1000; // per series and run: min/max buckets on the server keep every dip
// Points per curve shrink as runs are added: a chart ~700 px wide shows no more than ~12,000
// points per series kind legibly, whatever the run count (12 runs: 1000 per curve, 100 runs:
// 120; min/max buckets keep every spike, and zooming re-fetches the window at full detail).
// `?points=` overrides.
const POINT_BUDGET = 12_000;
const MIN_POINTS = 100;

export function maxPointsFor(nRuns) {
  const forced = Number(param("points"));
  if (Number.isInteger(forced) && forced >= 32) return Math.min(forced, 100_000);
  return Math.max(MIN_POINTS, Math.min(MAX_POINTS, Math.floor(POINT_BUDGET / Math.max(1, nRuns))));
}
const REFRESH_MS = 1500; // live redraws at most this often
// The compare view draws only these layer series: asking for them alone halves the payload.
const LAYER_KEYS = ["train_var", "eval_var", "running_var", "shift", ...STORY_LAYER_KEYS].join(",");

const MAX_ID = 2 ** 31 - 1; // run ids are 32-bit in the database
const MAX_LAYER_CHARTS = 12; // beyond this many BN layers, pick a stage (deep nets have 50-300)
const MAX_FLAT_MENU = 24; // more layers than this: the layer menu lists one stage at a time
const X_TITLES = { step: "step", epoch: "epoch", wall: "wall time (s since the first probe)" };

function runData(entry) {
  const raw = entry.metrics_raw_points;
  return { run: entry.run, metrics: entry.metrics, metricsRaw: raw > 0 ? raw : null,
    layers: entry.layers.layers ?? [], layersRaw: entry.layers.raw_points ?? null };
}

// Every run's row, metrics and layers in one request (GET /api/compare). Ids that do not exist
// (a shared link to deleted runs) are named by the 404, dropped, and the rest asked again.
export async function loadRunsData(ids, maxPoints, window = {}) {
  const data = new Map();
  const missing = ids.filter((id) => id > MAX_ID);
  let todo = ids.filter((id) => id <= MAX_ID);
  while (todo.length) {
    try {
      const body = await api.getCompare(todo, { layerKeys: LAYER_KEYS, maxPoints, ...window });
      for (const entry of body.runs) data.set(entry.run.id, runData(entry));
      break;
    } catch (err) {
      const gone = err.status === 404 && Array.isArray(err.detail) ? err.detail[0]?.input : null;
      if (!Array.isArray(gone) || !gone.length) throw err;
      missing.push(...gone);
      todo = todo.filter((id) => !gone.includes(id));
    }
  }
  return { data, missing: missing.map((id) => `#${id}: run ${id} not found`) };
}

function options() {
  return {
    layer: param("layer", "all"),
    logy: flagParam("logy"),
    smoothing: Math.min(0.99, Math.max(0, Number(param("smooth", "0")) || 0)),
    running: flagParam("running"),
    groupBy: param("group") === "1" ? "seed" : param("group", "").replace(/^config\./, ""),
    band: param("band") === "sd" ? "sd" : "minmax",
    x: ["epoch", "wall"].includes(param("x")) ? param("x") : "step",
    shared: param("zoom") !== "0",
    hidden: new Set((param("hide", "") || "").split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0)),
  };
}

// ---- traces ----------------------------------------------------------------------------

// One entry's curve for a series: a line per run, or mean + min/max band for a seed group.
function curveTraces(entry, colourOf, getSeries, { key, dash, opts, legend, meta }) {
  const series = entry.runs.map((run) => getSeries(run.id, key)).filter(Boolean);
  if (!series.length) return [];
  const color = colourOf(entry);
  const name = entry.label;
  const base = { name, color, dash, group: entry.key, showlegend: legend,
    hoverLabel: `${name} · ${key}`, meta: { ...meta, series: key, runs: entry.runs.map((r) => r.id) } };
  // Smoothing keeps the raw curve, faint and without a legend entry, under the smoothed one.
  const raw = (x, y) => (opts.smoothing > 0
    ? [{ ...line({ ...base, x, y, width: 1, showlegend: false, meta: { ...base.meta, raw: true } }), opacity: 0.25 }]
    : []);
  if (series.length === 1) {
    return [...raw(series[0].x, series[0].y),
      line({ ...base, x: series[0].x, y: smooth(series[0].y, opts.smoothing) })];
  }
  const agg = aggregateBand(series, opts.band);
  return [...raw(agg.x, agg.mean),
    ...band({ x: agg.x, lo: smooth(agg.lo, opts.smoothing), hi: smooth(agg.hi, opts.smoothing),
      name, color, group: entry.key, meta: { ...base.meta, band: opts.band } }),
    line({ ...base, x: agg.x, y: smooth(agg.mean, opts.smoothing) }),
  ];
}

function layerTraces(ctx, layerIndex, opts, legend) {
  const keys = ["train_var", "eval_var", ...(opts.running ? ["running_var"] : [])];
  const getSeries = (id, key) => {
    const layer = ctx.data.get(id)?.layers.find((l) => l.index === layerIndex);
    return layer ? ctx.onX(id, { x: layer.step, y: layer[key] }) : null;
  };
  return ctx.entries.flatMap((entry) => keys.flatMap((key, k) =>
    curveTraces(entry, ctx.colourOf, getSeries,
      { key, dash: DASH[key], opts, legend: legend && k === 0, meta: { layer: layerIndex } })));
}

function accuracyTraces(ctx, opts) {
  const getSeries = (id, key) => {
    const m = ctx.data.get(id)?.metrics;
    if (!m || !m[key]) return null;
    const series = ctx.onX(id, { x: m.step, y: m[key] });
    return series && SPARSE_METRICS.has(key) ? measuredOnly(series) : series;
  };
  return ctx.entries.flatMap((entry) => [
    ...curveTraces(entry, ctx.colourOf, getSeries, { key: "val_acc", dash: "solid", opts, legend: true }),
    ...curveTraces(entry, ctx.colourOf, getSeries,
      { key: "val_acc_train_mode", dash: "dash", opts, legend: false }),
  ]);
}

// Only runs that had probe.grad_noise on carry grad_cos values.
function hasGradCos(ctx) {
  return [...ctx.data.values()].some((d) => (d.metrics.grad_cos ?? []).some(Number.isFinite));
}

function gradCosTraces(ctx, opts) {
  const getSeries = (id, key) => {
    const m = ctx.data.get(id)?.metrics;
    return m && (m[key] ?? []).some(Number.isFinite) ? ctx.onX(id, { x: m.step, y: m[key] }) : null;
  };
  return ctx.entries.flatMap((entry) =>
    curveTraces(entry, ctx.colourOf, getSeries, { key: "grad_cos", dash: "solid", opts, legend: true }));
}

// Final shift per layer: the summary's value when the run ended, else the last probe's.
function shiftOf(data, layer) {
  const fromSummary = data.run.summary?.shift_by_layer?.[layer.name];
  return Number.isFinite(fromSummary) ? fromSummary : lastFinite(layer.shift);
}

function shiftTraces(ctx, layerNames) {
  return ctx.entries.map((entry) => {
    const perRun = entry.runs.map((run) => {
      const data = ctx.data.get(run.id);
      return layerNames.map((_, i) => {
        const layer = data?.layers.find((l) => l.index === i);
        return layer ? shiftOf(data, layer) : null;
      });
    });
    const y = layerNames.map((_, i) => {
      const vs = perRun.map((r) => r[i]).filter((v) => v !== null);
      return vs.length ? vs.reduce((a, b) => a + b, 0) / vs.length : null;
    });
    // x is the depth (layer index), the name in the hover: 300 names would not fit as ticks.
    const trace = line({ x: layerNames.map((_, i) => i), y, name: entry.label, color: ctx.colourOf(entry),
      group: entry.key, meta: { series: "shift", runs: entry.runs.map((r) => r.id) } });
    trace.hovertemplate = `layer %{x}: %{y:.4g}<extra>${trace.name}</extra>`;
    trace.type = "scatter";
    trace.mode = "lines+markers";
    if (entry.runs.length > 1) {
      const lo = layerNames.map((_, i) => Math.min(...perRun.map((r) => r[i] ?? Infinity)));
      const hi = layerNames.map((_, i) => Math.max(...perRun.map((r) => r[i] ?? -Infinity)));
      trace.error_y = { type: "data", symmetric: false, array: hi.map((h, i) => h - y[i]),
        arrayminus: lo.map((l, i) => y[i] - l), thickness: 1, width: 3 };
    }
    return trace;
  });
}

// The depth axis of the shift chart: numeric layer index, ticks at the stage starts.
function depthAxis(names, places = null) {
  const stages = stagesOf(names, names.map((_, i) => i), places);
  const base = {};
  if (stages.length < 2) return base;
  return { ...base, tickvals: stages.map((st) => st.indices[0]), ticktext: stages.map((st) => st.stage) };
}

// ---- panels ----------------------------------------------------------------------------

function rawNote(raws, drawn) {
  const counts = raws.filter((n) => Number.isFinite(n) && n > 0);
  if (!counts.length) return "";
  const max = Math.max(...counts);
  const min = Math.min(...counts);
  const range = min === max ? `${max}` : `${min}–${max}`;
  return max > drawn
    ? `${range} raw points per curve, drawn as ≤${drawn} (min/max buckets keep every dip)`
    : `${range} raw points per curve, all drawn`;
}

function chartBox(id, title) {
  const plot = el("div", { class: "chart", id, role: "img", "aria-label": title });
  const note = el("div", { class: "chart-note" });
  return { box: el("div", { class: "chart-box" }, plot, note), plot, note };
}

function legendPanel(ctx) {
  return el("div", { class: "legend" },
    el("div", { class: "legend-key" },
      el("span", { class: "key-solid", text: "train (batch statistics)" }),
      el("span", { class: "key-dash", text: "inference (eval-mode input)" }),
      el("span", { class: "key-dot", text: "running estimate" })),
    ctx.allEntries.map((entry) => el("span", { class: `legend-item${ctx.isHidden(entry) ? " hidden-run" : ""}`,
      dataset: { key: entry.key } },
      el("button", { type: "button", class: "hide-toggle", "aria-pressed": String(ctx.isHidden(entry)),
        title: "hide or show in every chart", text: ctx.isHidden(entry) ? "show" : "hide",
        onclick: () => ctx.toggleHidden(entry) }),
      el("span", { class: "swatch", style: { background: ctx.colourOf(entry) } }),
      entry.runs.map((run) => el("a", { href: runUrl(run.id), "data-link": true, class: "legend-run",
        title: run.name, text: `#${run.id}` })),
      el("span", { class: "legend-label", text: entry.label.replace(/^(#\d+,?)+ /, "") }),
      entry.runs.map((run) => (isTerminal(run.status) ? null : statusBadge(run.status))))));
}

function diffTable(ctx) {
  const runs = ctx.runs;
  const paths = differingPaths(runs);
  if (!paths.length) return el("p", { class: "hint", text: "The selected runs have the same config." });
  return el("table", { class: "diff" },
    el("thead", {}, el("tr", {}, el("th", { text: "field" }),
      runs.map((run) => el("th", {}, el("span", { class: "swatch",
        style: { background: ctx.colourOf(ctx.entryOf(run.id)) } }), `#${run.id}`)))),
    el("tbody", {}, paths.map((p) => el("tr", {}, el("td", { class: "path", text: p }),
      runs.map((run) => el("td", { text: shortValue(configValue(run, p) ?? null) }))))));
}

function summaryTable(ctx) {
  const sizes = [...new Set(ctx.runs.flatMap((r) => Object.keys(r.summary?.test_acc_train_mode ?? {})))]
    .sort((a, b) => Number(a) - Number(b));
  return el("table", { class: "summary" },
    el("thead", {}, el("tr", {}, ["run", "status", "test eval", ...sizes.map((s) => `train-mode @${s}`),
      "recalibrated", "max shift"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ctx.runs.map((run) => {
      const s = run.summary ?? {};
      const shifts = Object.values(s.shift_by_layer ?? {}).filter(Number.isFinite);
      return el("tr", {},
        el("td", {}, el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id} ` }),
          el("span", { class: "run-name", text: run.name })),
        el("td", {}, statusBadge(run.status)),
        el("td", { class: "num", text: pct(s.test_acc_eval) }),
        sizes.map((bs) => el("td", { class: "num", text: pct(s.test_acc_train_mode?.[bs]) })),
        el("td", { class: "num", text: pct(s.test_acc_recalibrated) }),
        el("td", { class: "num", text: shifts.length ? fmt(Math.max(...shifts)) : "–" }));
    })));
}

function controls(layerNames, bnIndices, groupPaths, redraw, places = null) {
  const opts = options();
  // Deep nets: a stage menu, then the layers of that stage only (never 300 names in one menu).
  const stages = stagesOf(layerNames, bnIndices, places);
  const stageSel = el("select", { name: "stage", "aria-label": "stage" },
    el("option", { value: "all", text: stages.length > 1 ? "all stages" : "all BN layers" }),
    stages.length > 1 ? stages.map((st) => el("option", { value: st.stage, text: `${st.stage} (${st.indices.length})` })) : []);
  const currentStage = param("stage", "all");
  stageSel.value = stages.some((st) => st.stage === currentStage) ? currentStage : "all";
  const inStage = stageSel.value === "all" ? bnIndices : stages.find((st) => st.stage === stageSel.value).indices;
  const layer = el("select", { name: "layer", "aria-label": "layer" },
    el("option", { value: "all", text: `all ${inStage.length} layers${inStage.length > MAX_LAYER_CHARTS ? ` (first ${MAX_LAYER_CHARTS} drawn)` : ""}` }),
    inStage.length <= MAX_FLAT_MENU || stageSel.value !== "all"
      ? inStage.map((i) => el("option", { value: String(i), text: `${i}: ${layerNames[i]}` })) : []);
  layer.value = inStage.includes(Number(opts.layer)) ? opts.layer : "all";
  const check = (name, label, on) => el("label", { class: "inline" },
    el("input", { type: "checkbox", name, checked: on }), ` ${label}`);
  const smoothing = el("input", { type: "range", name: "smooth", min: "0", max: "0.99", step: "0.01",
    value: String(opts.smoothing), "aria-label": "smoothing" });
  const smoothValue = el("span", { class: "smooth-value", text: opts.smoothing.toFixed(2) });
  const group = el("select", { name: "group", "aria-label": "group by" },
    el("option", { value: "", text: "no grouping" }),
    el("option", { value: "seed", text: "seeds (runs differing only in train.seed)" }),
    groupPaths.map((p) => el("option", { value: p, text: p })));
  group.value = [...group.options].some((o) => o.value === opts.groupBy) ? opts.groupBy : "";
  const bandSel = el("select", { name: "band", "aria-label": "band" },
    el("option", { value: "minmax", text: "band: min/max" }), el("option", { value: "sd", text: "band: ± sd" }));
  bandSel.value = opts.band;
  const xSel = el("select", { name: "x", "aria-label": "x-axis" },
    ["step", "epoch", "wall"].map((x) => el("option", { value: x, text: `x: ${x === "wall" ? "wall time" : x}` })));
  xSel.value = opts.x;
  const bar = el("div", { class: "toolbar compare-controls" },
    el("label", { class: "inline" }, "layers ", stageSel, layer),
    check("logy", "log y", opts.logy),
    check("running", "running_var", opts.running),
    el("label", { class: "inline" }, "group ", group, bandSel),
    xSel,
    check("zoom", "shared zoom", opts.shared),
    el("label", { class: "inline" }, "smoothing ", smoothing, smoothValue));
  bar.addEventListener("input", (event) => {
    const t = event.target;
    if (t.name === "smooth") smoothValue.textContent = Number(t.value).toFixed(2);
    setParams({ stage: stageSel.value === "all" ? null : stageSel.value,
      layer: t.name === "stage" || layer.value === "all" ? null : layer.value,
      logy: bar.querySelector('[name="logy"]').checked,
      running: bar.querySelector('[name="running"]').checked,
      group: group.value || null,
      band: bandSel.value === "sd" ? "sd" : null,
      x: xSel.value === "step" ? null : xSel.value,
      zoom: bar.querySelector('[name="zoom"]').checked ? null : "0",
      smooth: Number(smoothing.value) > 0 ? smoothing.value : null });
    redraw(["group", "layer", "stage", "x"].includes(t.name));
  });
  return bar;
}

// ---- the view ----------------------------------------------------------------------------

export function renderCompare(root, ids) {
  const started = performance.now();
  const ctx = { ids, runs: [], data: new Map(), entries: [], allEntries: [], colourOf: () => "#888",
    entryOf: () => null, onX: (id, s) => s, isHidden: () => false, toggleHidden: () => {} };
  let zoomWindow = null; // [step_min, step_max] of the last re-fetch on zoom, null: everything
  let alive = true;
  let stopStream = () => {};
  let refreshTimer = null;
  const dirty = new Set();

  const header = el("div", { class: "view-head" }, el("h1", { text: `Compare ${ids.length} runs` }));
  const body = el("div", { class: "compare-body" }, notice("loading…"));
  root.append(header, body);
  if (!ids.length) {
    body.replaceChildren(notice("Select runs in the runs table, or open /compare?runs=1,2.", "info"));
    return () => {};
  }

  function rebuildEntries() {
    const opts = options();
    ctx.allEntries = groupEntries(ctx.runs, opts.groupBy);
    // Hidden runs leave every chart at once (the story's too): only the visible entries draw.
    ctx.isHidden = (entry) => entry.runs.every((r) => opts.hidden.has(r.id));
    ctx.entries = ctx.allEntries.filter((e) => !ctx.isHidden(e));
    // One colour per run, from its id: the same run has the same colour in every view and URL.
    ctx.colourOf = (entry) => runColour(entry?.runs?.[0]?.id ?? 0);
    ctx.entryOf = (id) => ctx.allEntries.find((e) => e.runs.some((r) => r.id === id));
    const mappers = new Map([...ctx.data].map(([id, d]) => [id, xMapper(opts.x, d)]));
    ctx.onX = (id, series) => {
      const map = mappers.get(id);
      return map ? { x: series.x.map(map), y: series.y } : null; // a run without epochs/timing: not drawn
    };
    ctx.mapperOf = (id) => mappers.get(id);
    ctx.toggleHidden = (entry) => {
      const hidden = options().hidden;
      const on = !ctx.isHidden(entry);
      for (const r of entry.runs) {
        if (on) hidden.add(r.id);
        else hidden.delete(r.id);
      }
      setParams({ hide: [...hidden].sort((a, b) => a - b).join(",") || null });
      rebuildEntries();
      const item = body.querySelector(`.legend-item[data-key="${CSS.escape(entry.key)}"]`);
      if (item) {
        item.classList.toggle("hidden-run", on);
        const button = item.querySelector(".hide-toggle");
        button.textContent = on ? "show" : "hide";
        button.setAttribute("aria-pressed", String(on));
      }
      draw();
    };
  }

  // Stage/unit/place of each layer (RunPublic.layer_places) of the run with the most layers.
  function layerPlaces() {
    let places = null;
    for (const d of ctx.data.values()) {
      const p = d.run.layer_places;
      if (Array.isArray(p) && p.length > (places?.length ?? 0)) places = p;
    }
    return places;
  }

  function layerNames() {
    let names = [];
    for (const d of ctx.data.values()) {
      if (d.layers.length > names.length) names = d.layers.map((l) => l.name);
    }
    return names;
  }

  // Layers some run recorded BN variances for: a network without BN (or with fewer BN
  // layers) has layers carrying grad_norm only, which would make empty variance charts.
  function bnLayerIndices(names) {
    return names.map((_, i) => i).filter((i) => [...ctx.data.values()].some((d) => {
      const layer = d.layers.find((l) => l.index === i);
      return layer && ["train_var", "eval_var"].some((k) => (layer[k] ?? []).some(Number.isFinite));
    }));
  }

  let charts = null;

  function build() {
    rebuildEntries();
    purgeAll(body);
    const names = layerNames();
    const opts = options();
    const withBn = bnLayerIndices(names);
    const places = layerPlaces();
    const stage = stagesOf(names, withBn, places).find((st) => st.stage === param("stage"));
    const pool = stage ? stage.indices : withBn;
    const shown = opts.layer === "all" || !pool.includes(Number(opts.layer))
      ? pool.slice(0, MAX_LAYER_CHARTS) : [Number(opts.layer)];
    const layerCharts = shown.map((i) => ({ index: i, ...chartBox(`chart-layer-${i}`, `BN layer ${i}`) }));
    const accuracy = chartBox("chart-accuracy", "accuracy");
    const shift = chartBox("chart-shift", "variance shift by depth");
    const gradCos = hasGradCos(ctx) ? chartBox("chart-gradcos", "gradient cosine") : null;
    const story = el("div", { class: "story" }); // story.js: the argument above the raw curves
    charts = { layerCharts, accuracy, shift, gradCos, names, story, places };
    body.replaceChildren(
      controls(names, withBn, differingPaths(ctx.runs).filter((p) => p !== "train.seed"),
        (rebuild) => (rebuild ? build() : draw()), places),
      legendPanel(ctx),
      story,
      el("div", { class: `chart-grid ${shown.length === 1 ? "single" : ""}` }, layerCharts.map((c) => c.box)),
      el("div", { class: "chart-grid" }, shift.box, accuracy.box, gradCos?.box ?? null),
      el("div", { class: "tables" },
        el("section", { class: "panel" }, el("h2", { text: "Config fields that differ" }), diffTable(ctx)),
        el("section", { class: "panel" }, el("h2", { text: "Test accuracy" }), summaryTable(ctx))));
    if (pool.length > shown.length && shown.length > 1) {
      body.insertBefore(notice(`${pool.length} BN layers: the first ${shown.length} are drawn; pick a stage or a layer above. The shift-by-depth chart shows them all.`, "info"),
        body.querySelector(".chart-grid"));
    }
    if (!withBn.length) {
      body.append(notice(names.length ? "No BN layer statistics: the selected networks have no BN layer."
        : "No BN layer statistics yet (the first probe has not run).", "info"));
    }
    return draw();
  }

  function draw() {
    const opts = options();
    const { layerCharts, accuracy, shift, gradCos, names } = charts;
    const revision = `compare:${ids.join(",")}:${opts.layer}:${opts.logy}:${opts.groupBy}:${opts.x}`;
    const xTitle = X_TITLES[opts.x];
    const single = layerCharts.length === 1;
    // Past a handful of runs, Plotly legends would squeeze the plots: the HTML legend names them.
    const legend = ctx.entries.length <= 6;
    const layersRaw = [...ctx.data.values()].map((d) => d.layersRaw);
    const drawing = [];
    for (const c of layerCharts) {
      drawing.push(render(c.plot, layerTraces(ctx, c.index, opts, single && legend),
        layout({ title: `BN layer ${c.index} · ${names[c.index]} — input variance`, yTitle: "variance",
          xTitle, logy: opts.logy, showlegend: single && legend, height: single ? 460 : 300 }),
        { uirevision: revision, filename: `bnlab-compare-layer${c.index}` }));
      c.note.textContent = rawNote(layersRaw, maxPointsFor(ids.length));
    }
    const shiftLayout = layout({ title: "bnlab per-channel shift by layer (final; with no shift it reads its noise floor, above 1)", xTitle: "BN layer (depth)", yTitle: "shift",
      logy: opts.logy, showlegend: legend });
    shiftLayout.xaxis = { ...shiftLayout.xaxis, ...depthAxis(names, charts.places) }; // keeps the theme's grid
    drawing.push(render(shift.plot, shiftTraces(ctx, names), shiftLayout,
      { uirevision: revision, filename: "bnlab-compare-shift" }));
    drawing.push(render(accuracy.plot, accuracyTraces(ctx, opts),
      layout({ title: "validation accuracy — eval mode (solid) vs train mode (dashed)", yTitle: "accuracy",
        xTitle, showlegend: legend }),
      { uirevision: revision, filename: "bnlab-compare-accuracy" }));
    accuracy.note.textContent = rawNote([...ctx.data.values()].map((d) => d.metricsRaw), maxPointsFor(ids.length));
    if (gradCos) {
      drawing.push(render(gradCos.plot, gradCosTraces(ctx, opts),
        layout({ title: "gradient cosine to the large-batch gradient (higher = less noise)", yTitle: "cosine",
          xTitle, showlegend: legend }),
        { uirevision: revision, filename: "bnlab-compare-gradcos" }));
      gradCos.note.textContent = accuracy.note.textContent;
    }
    drawing.push(renderStory(charts.story, ctx));
    return Promise.all(drawing).then((result) => {
      bindZoom();
      return result;
    });
  }

  // The charts whose x-axis is the training time (step, epoch or wall): they share a zoom.
  function timeCharts() {
    const { layerCharts, accuracy, gradCos } = charts;
    return [...layerCharts.map((c) => c.plot), accuracy.plot, gradCos?.plot].filter(Boolean);
  }

  let syncing = false;
  let zoomTimer = null;

  function bindZoom() {
    for (const div of timeCharts()) {
      if (div.dataset.zoomBound) continue;
      div.dataset.zoomBound = "1";
      div.on("plotly_relayout", (ev) => onZoom(div, ev));
    }
  }

  function onZoom(source, ev) {
    if (syncing || !options().shared) return;
    const range = ev["xaxis.range[0]"] !== undefined ? [ev["xaxis.range[0]"], ev["xaxis.range[1]"]]
      : Array.isArray(ev["xaxis.range"]) ? ev["xaxis.range"] : null;
    const reset = ev["xaxis.autorange"] === true;
    if (!range && !reset) return;
    syncing = true;
    const update = range ? { "xaxis.range": range } : { "xaxis.autorange": true };
    Promise.all(timeCharts().filter((d) => d !== source).map((d) => window.Plotly.relayout(d, update)))
      .finally(() => { syncing = false; });
    clearTimeout(zoomTimer);
    zoomTimer = setTimeout(() => refetchWindow(range), 300);
  }

  // Re-fetch on zoom: the series inside the window, downsampled there (min/max buckets).
  async function refetchWindow(range) {
    let window = null;
    if (range) {
      const opts = options();
      const spans = [...ctx.data.keys()].map((id) => {
        const map = ctx.mapperOf(id);
        const steps = ctx.data.get(id).metrics?.step ?? [];
        return map ? stepRange(map, range.map(Number), Math.max(...steps, 1) * 2) : null;
      }).filter(Boolean);
      if (!spans.length) return;
      window = opts.x === "step" ? [Math.max(0, Math.floor(range[0])), Math.ceil(range[1])]
        : [Math.min(...spans.map((r) => r[0])), Math.max(...spans.map((r) => r[1]))];
    }
    if (JSON.stringify(window) === JSON.stringify(zoomWindow)) return;
    zoomWindow = window;
    const visible = ctx.entries.flatMap((e) => e.runs.map((r) => r.id));
    const fresh = await loadRunsData(visible, maxPointsFor(ids.length),
      window ? { stepMin: window[0], stepMax: window[1] } : {}).catch(() => null);
    if (!alive || !fresh) return;
    for (const [id, d] of fresh.data) ctx.data.set(id, d);
    rebuildEntries();
    await draw();
    window_note(window);
  }

  function window_note(window) {
    body.dataset.stepWindow = window ? window.join(",") : "";
  }

  async function refreshDirty() {
    refreshTimer = null;
    const todo = [...dirty];
    dirty.clear();
    const fresh = await loadRunsData(todo, maxPointsFor(ids.length)).catch(() => null);
    if (!alive || !fresh) return;
    for (const d of fresh.data.values()) {
      ctx.data.set(d.run.id, d);
      ctx.runs = ctx.runs.map((r) => (r.id === d.run.id ? d.run : r));
    }
    const before = charts?.names.length ?? 0;
    if (layerNames().length !== before || hasGradCos(ctx) !== Boolean(charts?.gradCos)) build();
    else draw();
  }

  function onEvent(event) {
    dirty.add(event.runId);
    if (!refreshTimer) refreshTimer = setTimeout(refreshDirty, REFRESH_MS);
  }

  (async () => {
    let loaded;
    try {
      loaded = await loadRunsData(ids, maxPointsFor(ids.length));
    } catch (err) {
      loaded = { data: new Map(), missing: [err.message] };
    }
    if (!alive) return;
    const { missing } = loaded;
    for (const [id, d] of loaded.data) ctx.data.set(id, d);
    ctx.runs = ids.filter((id) => ctx.data.has(id)).map((id) => ctx.data.get(id).run);
    const fetched = performance.now();
    if (!ctx.runs.length) {
      body.replaceChildren(notice(`Nothing to compare. ${missing.join("; ")}`, "error"));
      return;
    }
    header.firstChild.textContent = `Compare ${ctx.runs.length} run${ctx.runs.length === 1 ? "" : "s"}`;
    await build();
    if (missing.length) body.prepend(notice(`not loaded: ${missing.join("; ")}`, "warn"));
    const live = ctx.runs.filter((r) => !isTerminal(r.status)).map((r) => r.id);
    stopStream = watch(live, onEvent);
    // Timings for benchmarks/bench_dashboard.py and the tests: data fetched, charts drawn.
    // ready_ms counts from the navigation start (module loading included).
    window.__bnlabTimings = { fetch_ms: fetched - started, total_ms: performance.now() - started,
      ready_ms: performance.now() };
    document.body.dataset.ready = "compare";
  })();

  return () => {
    alive = false;
    stopStream();
    clearTimeout(refreshTimer);
    delete document.body.dataset.ready;
  };
}
