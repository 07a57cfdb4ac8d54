// The argument of a comparison, around its raw curves (compare view and run page), drawn from
// one StoryContext (data/context.js) into three slots:
//   top     the study's question (its preset) and the verdict: is the shift real, what to do;
//   charts  measured against predicted shift per layer with the noise floor, shift against
//           accuracy lost, loss, gradient norm by depth, per-channel shift over training;
//   tables  accuracies and their gaps, shift per BN layer with floor, prediction and verdict,
//           and what variance shift is (collapsed when many runs make them long).
// renderStory may be called on every redraw: the panels are rebuilt only when the entries or a
// run's data changed, the user's choices (batch size, layer, open panels) kept.

import * as api from "../lib/api.js";
import { layout, purgeAll, render } from "../charts/plotly.js";
import {
  distributionTraces,
  gradDepthTraces,
  lossTraces,
  shiftAccuracyTraces,
  shiftByLayerTraces,
} from "../charts/story.js";
import { finite } from "../data/format.js";
import { MAX_FLAT_LAYERS } from "../data/groups.js";
import { SERIES, layerOrder, layerStages, presetIdOf, trainModeSizes } from "../data/story.js";
import { runFacts } from "../data/verdict.js";
import { el, setChildren } from "../lib/dom.js";
import { presetPanel } from "./presets.js";
import { accuracyTable, explanation, shiftTables, tablesOpen } from "./story_tables.js";
import { verdictPanel } from "./verdict.js";

// Layer series the story draws beyond the compare view's own: they travel in the view's one
// request. The distribution panel's series are asked for only when that panel is opened (four
// more series per layer would more than double the view's payload for a panel not always read).
export const STORY_LAYER_KEYS = [SERIES.gradNorm, SERIES.shiftLi];
const DIST_KEYS = [SERIES.floor, SERIES.logQ1, SERIES.logMedian, SERIES.logQ3];
const DIST_POINTS = 400; // per curve: a quartile band needs no more
const distCache = new WeakMap(); // a run's data object → Promise of its layers with DIST_KEYS

const hasDistKeys = (data) => data.layers.some((l) => DIST_KEYS.every((k) => Array.isArray(l[k])));

// ctx with every run's layers carrying DIST_KEYS: fetched once per data object the view holds.
async function withDistribution(ctx) {
  const need = ctx.runs.filter((r) => {
    const d = ctx.data.get(r.id);
    return d && !hasDistKeys(d) && !distCache.has(d);
  });
  if (need.length) {
    const answer = api.getCompare(
      need.map((r) => r.id),
      { layerKeys: DIST_KEYS.join(","), metricKeys: "epoch", maxPoints: DIST_POINTS },
    );
    for (const run of need) {
      distCache.set(
        ctx.data.get(run.id),
        answer
          .then((body) => body.runs.find((e) => e.run.id === run.id)?.layers.layers ?? [])
          .catch(() => []),
      );
    }
  }
  const data = new Map();
  for (const run of ctx.runs) {
    const d = ctx.data.get(run.id);
    if (d) data.set(run.id, hasDistKeys(d) ? d : { ...d, layers: await distCache.get(d) });
  }
  return { ...ctx, data };
}

// One panel per preset the runs came from (its question, where to look, what to expect).
async function presetPanels(runs) {
  const byPreset = new Map();
  for (const run of runs) {
    const id = presetIdOf(run);
    if (!id) continue;
    if (!byPreset.has(id)) byPreset.set(id, []);
    byPreset.get(id).push(run.id);
  }
  const panels = await Promise.all(
    [...byPreset].map(async ([id, ids]) => {
      const preset = await api.getPreset(id).catch(() => null);
      return preset ? presetPanel(preset, ids, runs.length - ids.length) : null;
    }),
  );
  return panels.filter(Boolean);
}

function chartBox(id, title) {
  const plot = el("div", { class: "chart", id, role: "img", "aria-label": title });
  const note = el("div", { class: "chart-note" });
  return { box: el("div", { class: "chart-box" }, plot, note), plot, note };
}

const state = new WeakMap(); // slots.top → {bs, layer, distOpen, ...}: choices across redraws
const sameList = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * Draws the story of `ctx` into `slots` ({top, charts, tables}); a Promise of the drawing.
 * Rebuilds only when the entries or some run's data changed, or when `force`d.
 */
export function renderStory(slots, ctx, { force = false } = {}) {
  if (!state.has(slots.top)) state.set(slots.top, {});
  const mine = state.get(slots.top);
  const signature = [
    ctx.entries.map((e) => e.key).join("|"),
    ...ctx.runs.map((r) => ctx.data.get(r.id)),
  ];
  if (!force && mine.signature && sameList(mine.signature, signature)) return mine.drawing;
  mine.signature = signature;
  mine.drawing = buildStory(slots, ctx, mine);
  return mine.drawing;
}

async function buildStory(slots, ctx, mine) {
  mine.generation = (mine.generation ?? 0) + 1;
  const generation = mine.generation;
  const visible = ctx.entries.flatMap((e) => e.runs);
  const facts = visible
    .map((run) => ctx.data.get(run.id))
    .filter(Boolean)
    .map((data) => runFacts(data, ctx.layerInfo?.get(data.run.id)));
  const [presets, verdict] = await Promise.all([
    presetPanels(ctx.runs),
    verdictPanel(facts, { single: ctx.single }),
  ]);
  if (generation !== mine.generation) return null; // a newer build owns the slots
  slots.top.replaceChildren(verdict, ...presets); // the answer first, then the study's question
  drawTables(slots.tables, ctx, mine);
  const drawing = drawCharts(slots.charts, ctx, mine, generation);
  slots.top.dataset.ready = "story";
  return drawing;
}

function drawTables(host, ctx, mine) {
  const sizes = trainModeSizes(ctx.runs);
  const bs = sizes.includes(mine.bs) ? mine.bs : (sizes.at(-1) ?? null);
  mine.bs = bs;
  const open = tablesOpen(ctx);
  const keep = (cls) => host.querySelector(`details.${cls}`)?.open;
  const onSize = (value) => {
    mine.bs = value;
    drawTables(host, ctx, mine);
  };
  const names = layerOrder(ctx);
  setChildren(
    host,
    accuracyTable(ctx, { bs, sizes, onSize, open: keep("story-accuracy-fold") ?? open }),
    names.length ? shiftTables(ctx, names, { open: keep("story-shift-fold") ?? open }) : null,
    explanation(keep("story-explain") ?? false),
  );
}

// The layer menu of the distribution panel: a deep net's stage first, then that stage's layers.
function layerMenu(ctx, names, mine, redraw) {
  const stages = names.length > MAX_FLAT_LAYERS ? layerStages(ctx.runs, names) : null;
  const stageNow = stages?.find((st) => st.names.includes(mine.layer)) ?? null;
  const stageSelect = stages
    ? el(
        "select",
        {
          name: "story-stage",
          "aria-label": "stage",
          onchange: (e) => {
            mine.layer = stages.find((st) => st.stage === e.target.value).names[0];
            redraw();
          },
        },
        stages.map((st) =>
          el("option", {
            value: st.stage,
            text: `${st.stage} (${st.names.length})`,
            selected: st === stageNow,
          }),
        ),
      )
    : null;
  const menuNames = stageNow ? stageNow.names : names;
  const layerSelect =
    names.length > 1
      ? el(
          "select",
          {
            name: "story-layer",
            "aria-label": "BN layer",
            onchange: (e) => {
              mine.layer = e.target.value;
              redraw();
            },
          },
          menuNames.map((n) => el("option", { value: n, text: n, selected: n === mine.layer })),
        )
      : null;
  return layerSelect
    ? el("label", { class: "inline story-control" }, "BN layer ", stageSelect, layerSelect)
    : null;
}

function drawCharts(host, ctx, mine, generation) {
  const names = layerOrder(ctx);
  mine.layer = names.includes(mine.layer) ? mine.layer : (names[0] ?? null);
  // Networks without BN have no shift to show: no shift chart, correlation or distribution.
  const shiftChart = names.length
    ? chartBox("story-shift-layers", "measured vs predicted shift by layer")
    : null;
  const scatter =
    names.length > 0 && !ctx.single && ctx.runs.length > 1
      ? chartBox("story-shift-accuracy", "shift vs accuracy lost")
      : null;
  const loss = chartBox("story-loss", "loss");
  const grad = chartBox("story-grad-depth", "gradient norm by depth");
  mine.distOpen = mine.distOpen ?? ctx.single; // the run page has the series already
  const dist = mine.layer ? distributionPanel(ctx, names, mine, generation, host) : null;
  purgeAll(host);
  setChildren(
    host,
    el(
      "div",
      { class: "chart-grid story-charts" },
      shiftChart?.box ?? null,
      scatter?.box ?? null,
      loss.box,
      grad.box,
    ),
    dist?.panel ?? null,
  );
  const rev = `story:${ctx.entries.map((e) => e.key).join("|")}`;
  const legend = ctx.entries.length <= 6;
  const drawing = [
    shiftChart ? drawShiftChart(shiftChart, ctx, names, rev, legend) : null,
    scatter ? drawScatter(scatter, ctx, rev, legend) : null,
    render(
      loss.plot,
      lossTraces(ctx),
      layout({
        title: "loss — train (solid) vs validation, eval mode (dashed)",
        yTitle: "loss",
        showlegend: legend,
      }),
      { uirevision: rev, filename: "bnlab-loss" },
    ),
    render(
      grad.plot,
      gradDepthTraces(ctx),
      layout({
        title: "gradient norm by depth (last probe)",
        xTitle: "block (input side first)",
        yTitle: "grad norm",
        logy: true,
        showlegend: legend,
      }),
      { uirevision: rev, filename: "bnlab-grad-depth" },
    ),
    dist && mine.distOpen ? dist.draw() : null,
  ];
  return Promise.all(drawing.filter(Boolean));
}

function drawShiftChart(chart, ctx, names, rev, legend) {
  chart.note.textContent =
    "Grey band: what bnlab's per-channel statistic reads with no shift (noise floor). " +
    "The prediction is of bnlab's statistic (solid against dashed); Li et al.'s (dotted) is beside it.";
  return render(
    chart.plot,
    shiftByLayerTraces(ctx, names),
    layout({
      title:
        "final shift by layer — bnlab per-channel (solid) vs its prediction (dashed); Li et al. (dotted)",
      xTitle: "BN layer",
      yTitle: "shift",
      showlegend: legend,
    }),
    { uirevision: rev, filename: "bnlab-shift-measured-predicted" },
  );
}

function drawScatter(chart, ctx, rev, legend) {
  const corr = shiftAccuracyTraces(ctx);
  const r = finite(corr.r) ? `r = ${corr.r.toFixed(2)}, n = ${corr.n}` : `n = ${corr.n}`;
  chart.note.textContent =
    "One point per run. Li et al. found accuracy lost grows with the shift; with " +
    "few runs, or runs in clusters set by design, r says little.";
  return render(
    chart.plot,
    corr.traces,
    layout({
      title: `final shift vs accuracy lost to it (recalibrated − eval), ${r}`,
      xTitle: `mean shift over BN layers (${corr.statistic ?? "–"})`,
      yTitle: "accuracy lost (points)",
      showlegend: legend,
      extra: { hovermode: "closest" },
    }),
    { uirevision: rev, filename: "bnlab-shift-vs-accuracy" },
  );
}

// The per-channel shift of one layer over training, every run overlaid: its series are fetched
// when the panel is first opened.
function distributionPanel(ctx, names, mine, generation, host) {
  const chart = chartBox("story-distribution", "per-channel shift over training");
  const rev = `story:${ctx.entries.map((e) => e.key).join("|")}:${mine.layer}`;
  const draw = async () => {
    const full = await withDistribution(ctx);
    if (generation !== mine.generation) return null;
    const d = distributionTraces(full, mine.layer);
    const over = d.kind === "series";
    chart.note.textContent = over
      ? "Above 0: the layer sees more variance at inference than it normalises " +
        "with. Grey band: where the quartiles would lie from sampling noise alone."
      : "Per-channel shift of the last probe (no per-probe distribution recorded).";
    return render(
      chart.plot,
      d.traces,
      layout({
        title: over
          ? `${mine.layer}: per-channel log(eval_var / running_var) over training — median, quartiles`
          : `${mine.layer}: final per-channel shift max(r, 1/r), runs overlaid`,
        xTitle: over ? "step" : "shift",
        yTitle: over ? "log ratio (0 = no shift)" : "channels",
        showlegend: ctx.entries.length <= 6,
        extra: over ? {} : { barmode: "overlay", hovermode: "closest" },
      }),
      { uirevision: rev, filename: "bnlab-shift-distribution" },
    );
  };
  const redraw = () => drawCharts(host, ctx, mine, mine.generation);
  const panel = el(
    "details",
    {
      class: "panel story-dist",
      open: mine.distOpen,
      ontoggle: (e) => {
        mine.distOpen = e.target.open;
        if (mine.distOpen) draw();
      },
    },
    el("summary", { text: "Per-channel shift over training, runs overlaid" }),
    layerMenu(ctx, names, mine, redraw),
    el("div", { class: "chart-box" }, chart.plot, chart.note),
  );
  return { panel, draw };
}
