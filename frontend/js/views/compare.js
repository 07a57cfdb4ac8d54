// The compare view (/compare?runs=1,2,...): charts first — per BN layer the train-time variance
// (solid) against the inference-time variance (dashed) of every run, one colour per run; the
// shift by depth; eval- against train-mode accuracy — under a short verdict (is the shift real,
// what to do); below them the story's charts and the per-run tables, collapsed and searchable
// when many runs make them long. Layer/stage, log-y, smoothing, running_var, grouping (seeds or
// any config field, with a min/max or ±sd band), hidden runs, the x-axis (step, epoch, wall
// time) and shared zoom are URL parameters. With shared zoom on, zooming one chart zooms every
// time chart and re-fetches the runs' series inside the step window (min/max buckets there).

import * as api from "../lib/api.js";
import { layout, loadPlotly, purgeAll, render } from "../charts/plotly.js";
import {
  accuracyTraces,
  gradCosTraces,
  hasGradCos,
  layerTraces,
  rawNote,
  shiftTraces,
} from "../charts/compare.js";
import { runColour } from "../data/colours.js";
import { differingPaths } from "../data/configs.js";
import { storyContext } from "../data/context.js";
import {
  MAX_LAYER_CHARTS,
  depthTicks,
  groupEntries,
  stagesOf,
  stepRange,
  xMapper,
} from "../data/groups.js";
import { describeKey, infoOf, layerInfos, layerLabel } from "../data/layers.js";
import { isTerminal } from "../data/runs.js";
import { el, notice, setChildren } from "../lib/dom.js";
import { param, setParams } from "../lib/router.js";
import { watch } from "../lib/stream.js";
import { controls, options } from "./compare_controls.js";
import { diffPanel, legendPanel, summaryPanel } from "./compare_panels.js";
import { STORY_LAYER_KEYS, renderStory } from "./story.js";

const MAX_POINTS = 1000; // per series and run: min/max buckets on the server keep every dip
// Points per curve shrink as runs are added: a chart ~700 px wide shows no more than ~12,000
// points per series kind legibly, whatever the run count (12 runs: 1000 per curve, 100 runs:
// 120; min/max buckets keep every spike, and zooming re-fetches the window at full detail).
// `?points=` overrides.
const POINT_BUDGET = 12_000;
const MIN_POINTS = 100;
const REFRESH_MS = 1500; // live redraws at most this often
// The compare view draws only these layer series: asking for them alone halves the payload.
const LAYER_KEYS = ["train_var", "eval_var", "running_var", "shift", ...STORY_LAYER_KEYS].join(",");
const MAX_ID = 2 ** 31 - 1; // run ids are 32-bit in the database
const MAX_DESCRIBED = 40; // distinct networks described for their layer names; the rest: names
const X_TITLES = { step: "step", epoch: "epoch", wall: "wall time (s since the first probe)" };

export function maxPointsFor(nRuns) {
  const forced = Number(param("points"));
  if (Number.isInteger(forced) && forced >= 32) return Math.min(forced, 100_000);
  return Math.max(MIN_POINTS, Math.min(MAX_POINTS, Math.floor(POINT_BUDGET / Math.max(1, nRuns))));
}

function runData(entry) {
  const raw = entry.metrics_raw_points;
  return {
    run: entry.run,
    metrics: entry.metrics,
    metricsRaw: raw > 0 ? raw : null,
    layers: entry.layers.layers ?? [],
    layersRaw: entry.layers.raw_points ?? null,
  };
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

// Each distinct engine network described once (POST /api/describe): every BN layer's type and
// what feeds it. Script runs name theirs in their summary.
async function loadLayerInfo(runs) {
  const keys = new Map();
  for (const run of runs) {
    const key = describeKey(run);
    if (key && !keys.has(key) && keys.size < MAX_DESCRIBED) keys.set(key, run.config);
  }
  const answers = await Promise.all(
    [...keys].map(async ([key, config]) => [key, await api.describeOnce(key, config)]),
  );
  return layerInfos(runs, new Map(answers));
}

// ---- the view's state ----------------------------------------------------------------------

/** @returns {Object} the view: its CompareContext (data/context.js), elements and timers */
function createView(root, ids) {
  const view = {
    root,
    ids,
    alive: true,
    started: performance.now(),
    zoomWindow: null,
    syncing: false,
    zoomTimer: null,
    refreshTimer: null,
    dirty: new Set(),
    stopStream: () => {},
    charts: null,
    ctx: {
      ids,
      runs: [],
      data: new Map(),
      entries: [],
      allEntries: [],
      layerInfo: new Map(),
      single: false,
      colourOf: (entry) => runColour(entry?.runs?.[0]?.id ?? 0),
      entryOf: () => undefined,
      onX: (id, s) => s,
      mapperOf: () => null,
      isHidden: () => false,
      toggleHidden: () => {},
    },
  };
  view.header = el("div", { class: "view-head" }, el("h1", { text: `Compare ${ids.length} runs` }));
  view.body = el("div", { class: "compare-body" }, notice("loading…"));
  root.append(view.header, view.body);
  return view;
}

function rebuildEntries(view) {
  const { ctx } = view;
  const opts = options();
  ctx.allEntries = groupEntries(ctx.runs, opts.groupBy);
  // Hidden runs leave every chart at once (the story's too): only the visible entries draw.
  ctx.isHidden = (entry) => entry.runs.every((r) => opts.hidden.has(r.id));
  ctx.entries = ctx.allEntries.filter((e) => !ctx.isHidden(e));
  ctx.entryOf = (id) => ctx.allEntries.find((e) => e.runs.some((r) => r.id === id));
  const mappers = new Map([...ctx.data].map(([id, d]) => [id, xMapper(opts.x, d)]));
  ctx.onX = (id, series) => {
    const map = mappers.get(id);
    return map ? { x: series.x.map(map), y: series.y } : null; // a run without epochs/timing: not drawn
  };
  ctx.mapperOf = (id) => mappers.get(id);
  ctx.toggleHidden = (entry) => toggleHidden(view, entry);
}

function toggleHidden(view, entry) {
  const hidden = options().hidden;
  const on = !view.ctx.isHidden(entry);
  for (const r of entry.runs) {
    if (on) hidden.add(r.id);
    else hidden.delete(r.id);
  }
  setParams({ hide: [...hidden].sort((a, b) => a - b).join(",") || null });
  rebuildEntries(view);
  const item = view.body.querySelector(`.legend-item[data-key="${CSS.escape(entry.key)}"]`);
  if (item) {
    item.classList.toggle("hidden-run", on);
    const button = item.querySelector(".hide-toggle");
    button.textContent = on ? "show" : "hide";
    button.setAttribute("aria-pressed", String(on));
  }
  draw(view);
}

// ---- the layers ------------------------------------------------------------------------------

// Stage/unit/place of each layer (RunPublic.layer_places) of the run with the most layers.
function layerPlaces(ctx) {
  let places = null;
  for (const d of ctx.data.values()) {
    const p = d.run.layer_places;
    if (Array.isArray(p) && p.length > (places?.length ?? 0)) places = p;
  }
  return places;
}

function layerNames(ctx) {
  let names = [];
  for (const d of ctx.data.values()) {
    if (d.layers.length > names.length) names = d.layers.map((l) => l.name);
  }
  return names;
}

// Layers some run recorded BN variances for: a network without BN (or with fewer BN layers)
// has layers carrying grad_norm only, which would make empty variance charts.
function bnLayerIndices(ctx, names) {
  return names
    .map((_, i) => i)
    .filter((i) =>
      [...ctx.data.values()].some((d) => {
        const layer = d.layers.find((l) => l.index === i);
        return (
          layer && ["train_var", "eval_var"].some((k) => (layer[k] ?? []).some(Number.isFinite))
        );
      }),
    );
}

// A chart's box: the plot, a note under it (how many raw points the curves stand for), and a
// caption (a BN layer's type and what feeds it).
function chartBox(id, title) {
  const plot = el("div", { class: "chart", id, role: "img", "aria-label": title });
  const note = el("div", { class: "chart-note" });
  const caption = el("div", { class: "chart-note chart-caption" });
  return { box: el("div", { class: "chart-box" }, plot, note, caption), plot, note, caption };
}

// The layers that get a chart each: the picked layer, else the picked stage's (or all), at most 12.
function shownLayers(ctx, names, withBn, places) {
  const opts = options();
  const stage = stagesOf(names, withBn, places).find((st) => st.stage === param("stage"));
  const pool = stage ? stage.indices : withBn;
  const shown =
    opts.layer === "all" || !pool.includes(Number(opts.layer))
      ? pool.slice(0, MAX_LAYER_CHARTS)
      : [Number(opts.layer)];
  return { pool, shown };
}

// ---- building and drawing ------------------------------------------------------------------

/** The page's skeleton: controls, the story's verdict, the legend, the charts, the tables. */
function build(view) {
  const { ctx, body } = view;
  rebuildEntries(view);
  purgeAll(body);
  const names = layerNames(ctx);
  const withBn = bnLayerIndices(ctx, names);
  const places = layerPlaces(ctx);
  const { pool, shown } = shownLayers(ctx, names, withBn, places);
  const layerCharts = shown.map((i) => ({
    index: i,
    ...chartBox(
      `chart-layer-${i}`,
      `BN layer ${i}: ${layerLabel(names[i], infoOf(ctx.layerInfo, names[i]))}`,
    ),
  }));
  const accuracy = chartBox("chart-accuracy", "accuracy");
  const shift = chartBox("chart-shift", "variance shift by depth");
  const gradCos = hasGradCos(ctx) ? chartBox("chart-gradcos", "gradient cosine") : null;
  const story = {
    top: el("div", { class: "story story-top" }),
    charts: el("div", { class: "story story-charts-slot" }),
    tables: el("div", { class: "story story-tables" }),
  };
  view.charts = { layerCharts, accuracy, shift, gradCos, names, story, places };
  setChildren(
    body,
    controls(
      { names, bnIndices: withBn, places, infos: ctx.layerInfo },
      differingPaths(ctx.runs).filter((p) => p !== "train.seed"),
      (rebuild) => (rebuild ? build(view) : draw(view)),
    ),
    story.top,
    legendPanel(ctx),
    pool.length > shown.length && shown.length > 1
      ? notice(
          `${pool.length} BN layers: the first ${shown.length} ` +
            "are drawn; pick a stage or a layer above. The shift-by-depth chart shows them all.",
          "info",
        )
      : null,
    el(
      "div",
      { class: `chart-grid ${shown.length === 1 ? "single" : ""}` },
      layerCharts.map((c) => c.box),
    ),
    el("div", { class: "chart-grid" }, shift.box, accuracy.box, gradCos?.box ?? null),
    story.charts,
    story.tables,
    diffPanel(ctx),
    summaryPanel(ctx),
  );
  if (!withBn.length) {
    body.append(
      notice(
        names.length
          ? "No BN layer statistics: the selected networks have no BN layer."
          : "No BN layer statistics yet (the first probe has not run).",
        "info",
      ),
    );
  }
  return draw(view);
}

function drawLayerCharts(view, opts, revision, legend) {
  const { ctx, charts } = view;
  const single = charts.layerCharts.length === 1;
  const layersRaw = [...ctx.data.values()].map((d) => d.layersRaw);
  return charts.layerCharts.map((c) => {
    const name = charts.names[c.index];
    c.note.textContent = rawNote(layersRaw, maxPointsFor(view.ids.length));
    c.caption.textContent = layerLabel(name, infoOf(ctx.layerInfo, name));
    return render(
      c.plot,
      layerTraces(ctx, c.index, opts, single && legend),
      layout({
        title: `BN layer ${c.index} · ${name} — input variance`,
        yTitle: "variance",
        xTitle: X_TITLES[opts.x],
        logy: opts.logy,
        showlegend: single && legend,
        height: single ? 460 : 300,
      }),
      { uirevision: revision, filename: `bnlab-compare-layer${c.index}` },
    );
  });
}

function drawOverviewCharts(view, opts, revision, legend) {
  const { ctx, charts } = view;
  const { accuracy, shift, gradCos, names } = charts;
  const xTitle = X_TITLES[opts.x];
  const shiftLayout = layout({
    title:
      "bnlab per-channel shift by layer (final; with no shift it reads its noise floor, above 1)",
    xTitle: "BN layer (depth)",
    yTitle: "shift",
    logy: opts.logy,
    showlegend: legend,
  });
  shiftLayout.xaxis = { ...shiftLayout.xaxis, ...depthTicks(names, charts.places) }; // keeps the theme's grid
  const drawing = [
    render(shift.plot, shiftTraces(ctx, names), shiftLayout, {
      uirevision: revision,
      filename: "bnlab-compare-shift",
    }),
    render(
      accuracy.plot,
      accuracyTraces(ctx, opts),
      layout({
        title: "validation accuracy — eval mode (solid) vs train mode (dashed)",
        yTitle: "accuracy",
        xTitle,
        showlegend: legend,
        percent: true,
      }),
      { uirevision: revision, filename: "bnlab-compare-accuracy" },
    ),
  ];
  accuracy.note.textContent = rawNote(
    [...ctx.data.values()].map((d) => d.metricsRaw),
    maxPointsFor(view.ids.length),
  );
  if (gradCos) {
    drawing.push(
      render(
        gradCos.plot,
        gradCosTraces(ctx, opts),
        layout({
          title: "gradient cosine to the large-batch gradient (higher = less noise)",
          yTitle: "cosine",
          xTitle,
          showlegend: legend,
        }),
        { uirevision: revision, filename: "bnlab-compare-gradcos" },
      ),
    );
    gradCos.note.textContent = accuracy.note.textContent;
  }
  return drawing;
}

/** Every chart and the story, from the context as it is now. */
function draw(view) {
  const opts = options();
  const revision = `compare:${view.ids.join(",")}:${opts.layer}:${opts.logy}:${opts.groupBy}:${opts.x}`;
  // Past a handful of runs, Plotly legends would squeeze the plots: the HTML legend names them.
  const legend = view.ctx.entries.length <= 6;
  const drawing = [
    ...drawLayerCharts(view, opts, revision, legend),
    ...drawOverviewCharts(view, opts, revision, legend),
    renderStory(view.charts.story, storyContext(view.ctx)),
  ];
  return Promise.all(drawing).then((result) => {
    bindZoom(view);
    return result;
  });
}

// ---- shared zoom -------------------------------------------------------------------------------

// The charts whose x-axis is the training time (step, epoch or wall): they share a zoom.
function timeCharts(view) {
  const { layerCharts, accuracy, gradCos } = view.charts;
  return [...layerCharts.map((c) => c.plot), accuracy.plot, gradCos?.plot].filter(Boolean);
}

function bindZoom(view) {
  for (const div of timeCharts(view)) {
    if (div.dataset.zoomBound) continue;
    div.dataset.zoomBound = "1";
    div.on("plotly_relayout", (ev) => onZoom(view, div, ev));
  }
}

function onZoom(view, source, ev) {
  if (view.syncing || !options().shared) return;
  const range =
    ev["xaxis.range[0]"] !== undefined
      ? [ev["xaxis.range[0]"], ev["xaxis.range[1]"]]
      : Array.isArray(ev["xaxis.range"])
        ? ev["xaxis.range"]
        : null;
  const reset = ev["xaxis.autorange"] === true;
  if (!range && !reset) return;
  view.syncing = true;
  const update = range ? { "xaxis.range": range } : { "xaxis.autorange": true };
  Promise.all(
    timeCharts(view)
      .filter((d) => d !== source)
      .map((d) => window.Plotly.relayout(d, update)),
  ).finally(() => {
    view.syncing = false;
  });
  clearTimeout(view.zoomTimer);
  view.zoomTimer = setTimeout(() => refetchWindow(view, range), 300);
}

// The step window of an x range (epoch or wall time are mapped back to steps per run).
function stepWindow(view, range) {
  const { ctx } = view;
  const spans = [...ctx.data.keys()]
    .map((id) => {
      const map = ctx.mapperOf(id);
      const steps = ctx.data.get(id).metrics?.step ?? [];
      return map ? stepRange(map, range.map(Number), Math.max(...steps, 1) * 2) : null;
    })
    .filter(Boolean);
  if (!spans.length) return undefined;
  return options().x === "step"
    ? [Math.max(0, Math.floor(range[0])), Math.ceil(range[1])]
    : [Math.min(...spans.map((r) => r[0])), Math.max(...spans.map((r) => r[1]))];
}

// Re-fetch on zoom: the series inside the window, downsampled there (min/max buckets).
async function refetchWindow(view, range) {
  const window = range ? stepWindow(view, range) : null;
  if (window === undefined || JSON.stringify(window) === JSON.stringify(view.zoomWindow)) return;
  view.zoomWindow = window;
  const visible = view.ctx.entries.flatMap((e) => e.runs.map((r) => r.id));
  const fresh = await loadRunsData(
    visible,
    maxPointsFor(view.ids.length),
    window ? { stepMin: window[0], stepMax: window[1] } : {},
  ).catch(() => null);
  if (!view.alive || !fresh) return;
  for (const [id, d] of fresh.data) view.ctx.data.set(id, d);
  rebuildEntries(view);
  await draw(view);
  view.body.dataset.stepWindow = window ? window.join(",") : "";
}

// ---- live runs ---------------------------------------------------------------------------------

async function refreshDirty(view) {
  view.refreshTimer = null;
  const todo = [...view.dirty];
  view.dirty.clear();
  const fresh = await loadRunsData(todo, maxPointsFor(view.ids.length)).catch(() => null);
  if (!view.alive || !fresh) return;
  const { ctx } = view;
  for (const d of fresh.data.values()) {
    ctx.data.set(d.run.id, d);
    ctx.runs = ctx.runs.map((r) => (r.id === d.run.id ? d.run : r));
  }
  const before = view.charts?.names.length ?? 0;
  if (layerNames(ctx).length !== before || hasGradCos(ctx) !== Boolean(view.charts?.gradCos))
    build(view);
  else draw(view);
}

function onEvent(view, event) {
  view.dirty.add(event.runId);
  if (!view.refreshTimer) view.refreshTimer = setTimeout(() => refreshDirty(view), REFRESH_MS);
}

// ---- start and stop ----------------------------------------------------------------------------

async function start(view) {
  const { ctx, ids } = view;
  // Plotly (4.8 MB to parse) loads while the data is fetched and the layers are described.
  const plotly = loadPlotly().catch(() => null);
  let loaded;
  try {
    loaded = await loadRunsData(ids, maxPointsFor(ids.length));
  } catch (err) {
    loaded = { data: new Map(), missing: [err.message] };
  }
  const fetched = performance.now();
  if (!view.alive) return;
  for (const [id, d] of loaded.data) ctx.data.set(id, d);
  ctx.runs = ids.filter((id) => ctx.data.has(id)).map((id) => ctx.data.get(id).run);
  if (!ctx.runs.length) {
    view.body.replaceChildren(notice(`Nothing to compare. ${loaded.missing.join("; ")}`, "error"));
    return;
  }
  [ctx.layerInfo] = await Promise.all([loadLayerInfo(ctx.runs), plotly]);
  if (!view.alive) return;
  view.header.firstChild.textContent = `Compare ${ctx.runs.length} run${ctx.runs.length === 1 ? "" : "s"}`;
  await build(view);
  if (loaded.missing.length)
    view.body.prepend(notice(`not loaded: ${loaded.missing.join("; ")}`, "warn"));
  const live = ctx.runs.filter((r) => !isTerminal(r.status)).map((r) => r.id);
  view.stopStream = watch(live, (event) => onEvent(view, event));
  // Timings for benchmarks/bench_dashboard.py and the tests: data fetched, charts drawn.
  // ready_ms counts from the navigation start (module loading included).
  window.__bnlabTimings = {
    fetch_ms: fetched - view.started,
    total_ms: performance.now() - view.started,
    ready_ms: performance.now(),
  };
  document.body.dataset.ready = "compare";
}

export function renderCompare(root, ids) {
  const view = createView(root, ids);
  if (!ids.length) {
    view.body.replaceChildren(
      notice("Select runs in the runs table, or open /compare?runs=1,2.", "info"),
    );
    return () => {};
  }
  start(view);
  return () => {
    view.alive = false;
    view.stopStream();
    clearTimeout(view.refreshTimer);
    clearTimeout(view.zoomTimer);
    delete document.body.dataset.ready;
  };
}
