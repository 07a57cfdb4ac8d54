// The run page's charts as specs (views/run.js draws them): every curve the run recorded, the
// per-layer variance charts of the layers picked, the by-depth charts of every layer, and the
// per-channel shift histogram of the last probe. Nothing here fetches or draws.

import { colour } from "../data/colours.js";
import { plotText } from "../data/format.js";
import { depthTicks } from "../data/groups.js";
import { layerLabel } from "../data/layers.js";
import { DASH, SPARSE_METRICS, line, measuredOnly } from "./traces.js";

export function hasValues(values) {
  return Array.isArray(values) && values.some(Number.isFinite);
}

/**
 * @typedef {Object} ChartSpec
 * @property {string} id        the chart's element id
 * @property {Array} traces
 * @property {string} title
 * @property {string} yTitle
 * @property {Object} [opts]    {logy, yrange, xTitle, xaxis, percent, note}
 */

function metricSpecs(run, m, logy) {
  const tag = `#${run.id}`;
  const x = m.step ?? [];
  const mline = (key, color, dash = "solid", yFormat = ".4g") =>
    hasValues(m[key])
      ? [
          line({
            ...(SPARSE_METRICS.has(key) ? measuredOnly({ x, y: m[key] }) : { x, y: m[key] }),
            name: `${tag} ${key}`,
            color,
            dash,
            yFormat,
            meta: { run: run.id, series: key },
          }),
        ]
      : [];
  return [
    {
      id: "chart-loss",
      traces: [...mline("train_loss", colour(0)), ...mline("val_loss", colour(1))],
      title: "loss",
      yTitle: "loss",
      opts: { logy },
    },
    {
      id: "chart-acc",
      title: "accuracy (dashed: validation in train mode)",
      yTitle: "accuracy",
      traces: [
        ...mline("train_acc", colour(0), "solid", ".1%"),
        ...mline("val_acc", colour(1), "solid", ".1%"),
        ...mline("val_acc_train_mode", colour(1), "dash", ".1%"),
      ],
      opts: { percent: true },
    },
    // Log axis: a schedule spans decades (warm-up, step decay, cosine), a linear axis flattens it.
    {
      id: "chart-lr",
      traces: mline("lr", colour(2)),
      title: "learning rate (log axis)",
      yTitle: "lr",
      opts: { logy: true },
    },
    {
      id: "chart-gradcos",
      traces: mline("grad_cos", colour(4)),
      yTitle: "cosine",
      title: "gradient cosine to the large-batch gradient (higher = less noise)",
    },
  ];
}

const VAR_KEYS = ["train_var", "eval_var", "running_var"];

function layerSpecs(run, drawn, logy, info) {
  return drawn
    .filter((l) => VAR_KEYS.some((k) => hasValues(l[k])))
    .map((layer) => ({
      id: `chart-layer-${layer.index}`,
      traces: VAR_KEYS.map((key) =>
        line({
          x: layer.step,
          y: layer[key],
          name: `#${run.id} ${key}`,
          color: colour(layer.index),
          dash: DASH[key],
          meta: { run: run.id, layer: layer.index, series: key },
        }),
      ),
      title: `BN layer ${layer.index} · ${layer.name} — variance (solid train, dashed inference, dotted running)`,
      yTitle: "variance",
      opts: { logy, note: layerLabel(layer.name, info.get(layer.name)) },
    }));
}

/** The run's charts: only those with data (a net without BN has no "BN layer" charts). */
export function chartSpecs(run, m, layers, logy, sel, info = new Map()) {
  const drawn = layers.filter((l) => sel.lines.has(l.index));
  const perLayer = (key, dash = "solid") =>
    drawn
      .filter((l) => hasValues(l[key]))
      .map((layer) =>
        line({
          x: layer.step,
          y: layer[key],
          name: `#${run.id} ${layer.name} ${key}`,
          color: colour(layer.index),
          dash,
          meta: { run: run.id, layer: layer.index, series: key },
        }),
      );
  const depth = { logy, xTitle: "layer (depth)", xaxis: depthTicks(sel.names, sel.places) };
  const specs = [
    ...metricSpecs(run, m, logy),
    ...layerSpecs(run, drawn, logy, info),
    {
      id: "chart-means",
      traces: [...perLayer("train_mean"), ...perLayer("eval_mean", "dash")],
      title: "BN input mean per layer (solid train, dashed inference)",
      yTitle: "mean",
    },
    {
      id: "chart-shift",
      traces: perLayer("shift"),
      yTitle: "shift",
      title: "bnlab per-channel shift per layer (no shift: its noise floor, > 1)",
      opts: { logy, yrange: withoutFirstProbe(layers, "shift", logy) },
    },
    {
      id: "chart-grad",
      traces: perLayer("grad_norm"),
      title: "gradient norm of each layer's preceding weight",
      yTitle: "grad norm",
      opts: { logy },
    },
    {
      id: "chart-shift-depth",
      traces: shiftByDepth(run, layers),
      yTitle: "shift",
      opts: depth,
      title: "final shift by depth, every BN layer (bnlab per-channel; no shift: its noise floor)",
    },
    {
      id: "chart-grad-depth",
      traces: gradByDepth(run, layers),
      title: "gradient norm by depth (last probe)",
      yTitle: "grad norm",
      opts: depth,
    },
  ];
  return specs.filter((s) => s.traces.length);
}

// The y range of `key` over every layer's points after its first probe: the first probe meets a
// freshly initialised net whose shift can be 10-100x the rest, which would squash the curves.
// Null (autorange) when the first probe is not an outlier.
export function withoutFirstProbe(layers, key, logy) {
  const rest = layers
    .flatMap((l) => (l[key] ?? []).slice(1))
    .filter((v) => Number.isFinite(v) && (!logy || v > 0));
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
  const trace = line({
    x: points.map(([l]) => l.index),
    y: points.map(([, v]) => v),
    name: `#${run.id} ${series}`,
    color: colour(0),
    meta: { run: run.id, series },
  });
  trace.text = points.map(([l]) => plotText(l.name));
  trace.hovertemplate = "layer %{x} · %{text}: %{y:.4g}<extra></extra>";
  return [{ ...trace, type: "scatter", mode: "lines+markers" }];
}

// Last recorded grad_norm per layer against depth: vanishing/exploding gradients at a glance.
function gradByDepth(run, layers) {
  return byDepth(
    run,
    layers,
    (l) => (l.grad_norm ?? []).filter(Number.isFinite).at(-1),
    "grad_norm_by_depth",
  );
}

// Final shift per BN layer against depth: the summary's value when the run ended, else the last
// probe's.
function shiftByDepth(run, layers) {
  const final = run.summary?.shift_by_layer ?? {};
  return byDepth(
    run,
    layers,
    (l) =>
      Number.isFinite(final[l.name])
        ? final[l.name]
        : (l.shift ?? []).filter(Number.isFinite).at(-1),
    "shift_by_depth",
  );
}

// Per-channel shift histograms of the layers drawn (a deep net: the picked stage's, at most 12,
// not 300 overlaid histograms).
export function shiftHistogram(run, drawnNames) {
  const perChannel = run.summary?.shift_per_channel;
  if (!perChannel || !Object.keys(perChannel).length) return null;
  const entries = Object.entries(perChannel).filter(([name]) => drawnNames.has(name));
  if (!entries.length) return null;
  return entries.map(([name, values], i) => ({
    type: "histogram",
    x: values,
    name: plotText(`#${run.id} ${name}`),
    opacity: 0.6,
    marker: { color: colour(i) },
    nbinsx: 40,
    meta: { run: run.id, series: "shift_per_channel", layer: name },
  }));
}
