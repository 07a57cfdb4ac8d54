// The argument of a comparison, above its raw curves (compare view and run page): the preset's
// question, what to look at and the expected outcome; a short explanation of variance shift;
// eval, train-mode and recalibrated accuracy with the gaps, as mean ± sd (n) for grouped runs;
// measured against predicted shift per layer with the noise floor; the correlation of shift
// with accuracy lost; loss; gradient norm by depth; per-channel shift over training.
//
// renderStory(container, ctx) takes the data the view already fetched — ctx = {runs, data:
// Map(id → {run, metrics, layers}), entries: [{key, runs, label}], colourOf(entry)} — and may
// be called again on every redraw: the panels are rebuilt, the user's choices kept.

import * as api from "./api.js";
import { colour, layout, purgeAll, render } from "./charts.js";
import { stagesOf } from "./compare_tools.js";
import { el, fmt, notice, pct } from "./dom.js";
import {
  distributionTraces, gradDepthTraces, layerOrder, lossTraces, shiftAccuracyTraces, shiftByLayerTraces,
} from "./storycharts.js";
import { SERIES, accuracies, finite, presetIdOf, shiftRows, stats, trainModeSizes } from "./storydata.js";

// Layer series the story draws beyond the compare view's own: they travel in the view's one
// request. The distribution panel's series are asked for only when that panel is opened (four
// more series per layer would more than double the view's payload for a panel not always read).
export const STORY_LAYER_KEYS = [SERIES.gradNorm, SERIES.shiftLi];
const DIST_KEYS = [SERIES.floor, SERIES.logQ1, SERIES.logMedian, SERIES.logQ3];
const DIST_POINTS = 400; // per curve: a quartile band needs no more
const distCache = new WeakMap(); // a run's data object → Promise of its layers with DIST_KEYS

const MAX_FLAT = 24; // more BN layers than this (ResNets, DenseNets): tables and menus by stage

// The BN layer names grouped by stage in depth order, [{stage, names}], from the runs'
// layer_places (the API's stage of each layer) or else the names.
function layerStages(ctx, names) {
  const byName = new Map();
  for (const run of ctx.runs) for (const p of run.layer_places ?? []) byName.set(p.name, p);
  return stagesOf(names, names.map((_, i) => i), names.map((n) => byName.get(n) ?? n))
    .map((st) => ({ stage: st.stage, names: st.indices.map((i) => names[i]) }));
}

const hasDistKeys = (data) => data.layers.some((l) => DIST_KEYS.every((k) => Array.isArray(l[k])));

// ctx with every run's layers carrying DIST_KEYS: fetched once per data object the view holds.
async function withDistribution(ctx) {
  const need = ctx.runs.filter((r) => {
    const d = ctx.data.get(r.id);
    return d && !hasDistKeys(d) && !distCache.has(d);
  });
  if (need.length) {
    const answer = api.getCompare(need.map((r) => r.id),
      { layerKeys: DIST_KEYS.join(","), metricKeys: "epoch", maxPoints: DIST_POINTS });
    for (const run of need) {
      distCache.set(ctx.data.get(run.id), answer
        .then((body) => body.runs.find((e) => e.run.id === run.id)?.layers.layers ?? [])
        .catch(() => []));
    }
  }
  const data = new Map();
  for (const run of ctx.runs) {
    const d = ctx.data.get(run.id);
    if (d) data.set(run.id, hasDistKeys(d) ? d : { ...d, layers: await distCache.get(d) });
  }
  return { ...ctx, data };
}

const presetCache = new Map(); // id → Promise of the preset (or null when it is gone)

function loadPreset(id) {
  if (!presetCache.has(id)) presetCache.set(id, api.getPreset(id).catch(() => null));
  return presetCache.get(id);
}

// ---- text panels ---------------------------------------------------------------------------

async function presetPanels(runs) {
  const byPreset = new Map();
  for (const run of runs) {
    const id = presetIdOf(run);
    if (!id) continue;
    if (!byPreset.has(id)) byPreset.set(id, []);
    byPreset.get(id).push(run.id);
  }
  const panels = [];
  for (const [id, ids] of byPreset) {
    const preset = await loadPreset(id);
    if (!preset) continue;
    const outside = runs.length - ids.length;
    panels.push(el("section", { class: "panel story-preset", dataset: { preset: id } },
      el("h2", { text: `Study: ${preset.title}` }),
      el("p", { class: "story-question" }, el("strong", { text: "Question. " }), preset.question),
      el("p", { class: "story-look" }, el("strong", { text: "Look at. " }), preset.look_at),
      el("p", { class: "story-expected" }, el("strong", { text: "Expected. " }), preset.expected),
      el("p", { class: "hint", text: `Preset ${id}: runs ${ids.map((i) => `#${i}`).join(", ")}`
        + (outside > 0 ? `; ${outside} compared run${outside === 1 ? " is" : "s are"} from elsewhere.` : ".") })));
  }
  return panels;
}

const para = (...parts) => el("p", {}, ...parts);
const formula = (text) => el("code", { class: "formula", text });

function explanation(open) {
  return el("details", { class: "panel story-explain", open },
    el("summary", { text: "What is variance shift, and what do these numbers mean?" }),
    para("In training a BN layer normalises each channel by the statistics of the current batch and keeps a "
      + "running average of them (running_var); at inference it normalises with running_var. Dropout right "
      + "before BN makes the training-time variance larger than what the layer receives at inference "
      + "(dropout off), so inference divides by the wrong variance: the variance shift (Li et al., CVPR 2019)."),
    para("Li et al.'s statistic, per BN layer, with variances averaged over channels: ",
      formula("shift_li = max(Var_inference / running_var, running_var / Var_inference)"), " — 1 means none."),
    para("bnlab's per-channel statistic: ", formula("shift = mean_c max(r_c, 1/r_c),  r_c = eval_var_c / running_var_c"),
      ". Taking max(r, 1/r) per channel folds sampling noise upward, so with no shift at all it reads about ",
      formula("1 + 0.8·√(2/n)"), " for n held-out samples per channel: the grey noise-floor band, not 1."),
    para("Predicted, Dropout (keep probability q) right before BN, with μ and m2 the mean and second moment of "
      + "the dropout's input: ", formula("(m2/q − μ²) / (m2 − μ²)"), " (1/q for zero-mean input). Through a "
      + "linear layer (Dropout → Linear(w) → BN): ", formula("Var_train(h) = Var_eval(h) + (1/q − 1)·Σ wᵢ² m2ᵢ"),
    " — wide layers mix many features and shift less. Deeper layers inherit the shift of the layers above, "
      + "which a per-layer prediction does not include: it can fall either side of the measurement there."),
    para("Accuracies: eval = model.eval(); train mode = model.train() at test time (dropout on and BN on "
      + "each test batch's statistics: \"forgot model.eval()\"); BN-only train mode keeps dropout off; "
      + "recalibrated = BN statistics recomputed on training data with dropout off (PreciseBN). "
      + "Recalibrated − eval is what the shift costs; eval − train mode is what forgetting model.eval() costs."),
    para("The formulas, their derivations and the tests that check them: docs/science.md in the repository."));
}

// ---- tables --------------------------------------------------------------------------------

const points = (v) => (finite(v) ? `${v >= 0 ? "+" : ""}${(100 * v).toFixed(1)} pt` : "–");

// "54.5% ± 1.2 (n=3)" for a group, "54.5%" for one run.
function statCell(values, format, col, { sdFormat } = {}) {
  const s = stats(values);
  const text = s.n === 0 ? "–" : s.n === 1 ? format(s.mean) : `${format(s.mean)} ± ${(sdFormat ?? format)(s.sd)}`;
  return el("td", { class: "num", dataset: { col, n: String(s.n) },
    title: s.n > 1 ? `n=${s.n}, min ${format(s.min)}, max ${format(s.max)}` : null, text });
}

const sdPoints = (v) => `${(100 * v).toFixed(1)} pt`;

function swatchCell(ctx, entry) {
  return el("td", { class: "story-entry" },
    el("span", { class: "swatch", style: { background: ctx.colourOf(entry) } }), entry.label);
}

function accuracyTable(ctx, bs) {
  const hasBn = ctx.runs.some((r) => Object.keys(r.summary?.test_acc_train_bn ?? {}).length);
  const head = ["runs", "n", "eval", `train mode @${bs}`, ...(hasBn ? [`BN-only train @${bs}`] : []),
    "recalibrated", "recalibrated − eval", `eval − train mode @${bs}`];
  return el("table", { class: "story-table story-accuracy" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
    el("tbody", {}, ctx.entries.map((entry) => {
      const acc = entry.runs.map((run) => accuracies(run, bs));
      const col = (key) => acc.map((a) => a[key]);
      return el("tr", { dataset: { entry: entry.key } },
        swatchCell(ctx, entry),
        el("td", { class: "num", dataset: { col: "n" }, text: String(entry.runs.length) }),
        statCell(col("eval"), pct, "eval", { sdFormat: sdPoints }),
        statCell(col("trainMode"), pct, "train-mode", { sdFormat: sdPoints }),
        hasBn ? statCell(col("trainBn"), pct, "train-bn", { sdFormat: sdPoints }) : null,
        statCell(col("recal"), pct, "recalibrated", { sdFormat: sdPoints }),
        statCell(col("recalGap"), points, "gap-recal-eval", { sdFormat: sdPoints }),
        statCell(col("trainGap"), points, "gap-eval-train", { sdFormat: sdPoints }));
    })));
}

// Per entry and BN layer: both measured statistics with their noise floors, the prediction, and
// bnlab's statistic over the prediction (the prediction is a channel mean of per-channel ratios,
// like bnlab's statistic).
// One table for a small net; for a deep one a collapsed table per stage (300 rows per compared
// entry would bury the rest of the story).
function shiftTable(ctx, names) {
  if (names.length <= MAX_FLAT) return shiftStageTable(ctx, names);
  return el("div", { class: "story-stages" }, layerStages(ctx, names).map((st) =>
    el("details", { class: "story-stage", dataset: { stage: st.stage } },
      el("summary", { text: `${st.stage}: ${st.names.length} BN layers` }), shiftStageTable(ctx, st.names))));
}

function shiftStageTable(ctx, names) {
  const head = ["runs", "BN layer", "Li et al.", "its noise floor", "bnlab per-channel", "its noise floor",
    "predicted", "bnlab / predicted"];
  const rows = [];
  for (const entry of ctx.entries) {
    const perRun = entry.runs.map((run) => shiftRows(ctx.data.get(run.id)));
    for (const name of names) {
      const cells = perRun.map((r) => r.find((c) => c.name === name)).filter(Boolean);
      if (!cells.length) continue;
      const pick = (key) => cells.map((c) => c[key]);
      const ratio = cells.map((c) => (finite(c.shift) && finite(c.predicted) ? c.shift / c.predicted : null));
      rows.push(el("tr", { dataset: { entry: entry.key, layer: name } },
        swatchCell(ctx, entry), el("td", { text: name }),
        statCell(pick("shiftLi"), fmt, "measured-li"),
        statCell(pick("liFloor"), fmt, "floor-li"),
        statCell(pick("shift"), fmt, "measured"),
        statCell(pick("floor"), fmt, "floor"),
        statCell(pick("predicted"), fmt, "predicted"),
        statCell(ratio, fmt, "ratio")));
    }
  }
  if (!rows.length) return notice("No BN layer statistics yet.", "info");
  return el("table", { class: "story-table story-shift" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))), el("tbody", {}, rows));
}

// ---- the story -----------------------------------------------------------------------------

const state = new WeakMap(); // container → {bs, layer, open}: the user's choices across redraws

function chartBox(id, title) {
  const plot = el("div", { class: "chart", id, role: "img", "aria-label": title });
  const note = el("div", { class: "chart-note" });
  return { box: el("div", { class: "chart-box" }, plot, note), plot, note };
}

// The story's context for one run (the run page): one entry, the first colour.
export function runContext(run, metrics, layers) {
  const entry = { key: String(run.id), runs: [run], label: `#${run.id} ${run.name}` };
  return { runs: [run], data: new Map([[run.id, { run, metrics, layers }]]), entries: [entry],
    colourOf: () => colour(0) };
}

const sameList = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

// Rebuilds only when the entries or some run's data changed (the view replaces a run's data
// object when it refetches), or when `force`d by the story's own controls.
export function renderStory(container, ctx, { single = false, force = false } = {}) {
  if (!state.has(container)) state.set(container, {});
  const mine = state.get(container);
  const signature = [ctx.entries.map((e) => e.key).join("|"), ...ctx.runs.map((r) => ctx.data.get(r.id))];
  if (!force && mine.signature && sameList(mine.signature, signature)) return mine.drawing;
  mine.signature = signature;
  mine.drawing = buildStory(container, ctx, single, mine);
  return mine.drawing;
}

async function buildStory(container, ctx, single, mine) {
  mine.open = container.querySelector("details.story-explain")?.open ?? mine.open ?? false;
  const open = mine.open;
  const sizes = trainModeSizes(ctx.runs);
  const bs = sizes.includes(mine.bs) ? mine.bs : sizes.at(-1) ?? null;
  const names = layerOrder(ctx);
  const layer = names.includes(mine.layer) ? mine.layer : names[0] ?? null;
  Object.assign(mine, { bs, layer });

  mine.generation = (mine.generation ?? 0) + 1;
  const generation = mine.generation;
  const presets = await presetPanels(ctx.runs);
  if (generation !== mine.generation) return null; // a newer build owns the container
  const rerender = () => renderStory(container, ctx, { single, force: true });

  const sizeSelect = sizes.length > 1 ? el("select", { name: "story-bs", "aria-label": "test batch size",
    onchange: (e) => { mine.bs = e.target.value; rerender(); } },
  sizes.map((s) => el("option", { value: s, text: s, selected: s === bs }))) : null;
  // A deep net: the stage first, then the layers of that stage (never 300 names in one menu).
  const stages = names.length > MAX_FLAT ? layerStages(ctx, names) : null;
  const stageNow = stages?.find((st) => st.names.includes(layer)) ?? null;
  const stageSelect = stages ? el("select", { name: "story-stage", "aria-label": "stage",
    onchange: (e) => { mine.layer = stages.find((st) => st.stage === e.target.value).names[0]; rerender(); } },
  stages.map((st) => el("option", { value: st.stage, text: `${st.stage} (${st.names.length})`,
    selected: st === stageNow }))) : null;
  const menuNames = stageNow ? stageNow.names : names;
  const layerSelect = names.length > 1 ? el("select", { name: "story-layer", "aria-label": "BN layer",
    onchange: (e) => { mine.layer = e.target.value; rerender(); } },
  menuNames.map((n) => el("option", { value: n, text: n, selected: n === layer }))) : null;

  // Networks without BN have no shift to show: no shift chart, correlation or distribution.
  const shiftChart = names.length ? chartBox("story-shift-layers", "measured vs predicted shift by layer") : null;
  const scatter = names.length > 0 && !single && ctx.runs.length > 1
    ? chartBox("story-shift-accuracy", "shift vs accuracy lost") : null;
  const loss = chartBox("story-loss", "loss");
  const grad = chartBox("story-grad-depth", "gradient norm by depth");
  const dist = layer ? chartBox("story-distribution", "per-channel shift over training") : null;
  mine.distOpen = mine.distOpen ?? single; // the run page has the series already

  purgeAll(container);
  container.replaceChildren(
    ...presets,
    explanation(open),
    el("section", { class: "panel story-panel" },
      el("h2", { text: "Accuracy: eval, train mode, recalibrated — and the gaps" }),
      sizeSelect ? el("label", { class: "inline story-control" }, "train-mode test batch size ", sizeSelect) : null,
      bs === null ? el("p", { class: "hint", text: "No train-mode accuracy recorded." }) : null,
      accuracyTable(ctx, bs),
      el("p", { class: "hint", text: "Grouped runs: mean ± sample standard deviation, n runs; hover a cell "
        + "for min and max. A train-mode accuracy is undefined (–) where BN cannot run in train mode "
        + "(one sample per channel at test batch size 1)." })),
    names.length ? el("section", { class: "panel story-panel" },
      el("h2", { text: "Variance shift per BN layer: measured and predicted" }), shiftTable(ctx, names)) : null,
    el("div", { class: "chart-grid story-charts" }, shiftChart?.box ?? null, scatter?.box ?? null, loss.box, grad.box,
    ),
    dist ? el("details", { class: "panel story-dist", open: mine.distOpen,
      ontoggle: (e) => {
        mine.distOpen = e.target.open;
        if (mine.distOpen) drawDistribution();
      } },
    el("summary", { text: "Per-channel shift over training, runs overlaid" }),
    layerSelect ? el("label", { class: "inline story-control" }, "BN layer ", stageSelect, layerSelect) : null,
    el("div", { class: "chart-box" }, dist.plot, dist.note)) : null,
  );

  const rev = `story:${ctx.entries.map((e) => e.key).join("|")}`;
  const legend = ctx.entries.length <= 6;
  const drawing = [];
  if (shiftChart) {
    drawing.push(render(shiftChart.plot, shiftByLayerTraces(ctx, names), layout({
      title: "final shift by layer — measured (solid: Li et al., dotted: bnlab) vs predicted (dashed)",
      xTitle: "BN layer", yTitle: "shift", showlegend: legend }),
    { uirevision: rev, filename: "bnlab-shift-measured-predicted" }));
    shiftChart.note.textContent = "Grey band: what bnlab's per-channel statistic reads with no shift (noise floor).";
  }
  if (scatter) {
    const corr = shiftAccuracyTraces(ctx);
    const r = finite(corr.r) ? `r = ${corr.r.toFixed(2)}, n = ${corr.n}` : `n = ${corr.n}`;
    drawing.push(render(scatter.plot, corr.traces, layout({
      title: `final shift vs accuracy lost to it (recalibrated − eval), ${r}`,
      xTitle: `mean shift over BN layers (${corr.statistic ?? "–"})`, yTitle: "accuracy lost (points)",
      showlegend: legend, extra: { hovermode: "closest" } }), { uirevision: rev, filename: "bnlab-shift-vs-accuracy" }));
    scatter.note.textContent = "One point per run: Li et al. found accuracy lost grows with the shift.";
  }
  drawing.push(render(loss.plot, lossTraces(ctx), layout({ title: "loss — train (solid) vs validation, eval mode (dashed)",
    yTitle: "loss", showlegend: legend }), { uirevision: rev, filename: "bnlab-loss" }));
  drawing.push(render(grad.plot, gradDepthTraces(ctx), layout({ title: "gradient norm by depth (last probe)",
    xTitle: "block (input side first)", yTitle: "grad norm", logy: true, showlegend: legend }),
  { uirevision: rev, filename: "bnlab-grad-depth" }));
  async function drawDistribution() {
    const full = await withDistribution(ctx);
    if (generation !== mine.generation) return null;
    const d = distributionTraces(full, layer);
    const over = d.kind === "series";
    const drawn = render(dist.plot, d.traces, layout({
      title: over ? `${layer}: per-channel log(eval_var / running_var) over training — median, quartiles`
        : `${layer}: final per-channel shift max(r, 1/r), runs overlaid`,
      xTitle: over ? "step" : "shift", yTitle: over ? "log ratio (0 = no shift)" : "channels", showlegend: legend,
      extra: over ? {} : { barmode: "overlay", hovermode: "closest" } }), { uirevision: `${rev}:${layer}`,
      filename: "bnlab-shift-distribution" });
    dist.note.textContent = over ? "Above 0: the layer sees more variance at inference than it normalises "
      + "with. Grey band: where the quartiles would lie from sampling noise alone."
      : "Per-channel shift of the last probe (no per-probe distribution recorded).";
    return drawn;
  }
  if (dist && mine.distOpen) drawing.push(drawDistribution());
  container.dataset.ready = "story";
  return Promise.all(drawing);
}
