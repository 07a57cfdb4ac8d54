// The story's figures (views/story.js, charts/story.js): which summary and series keys carry
// what, per-run figures (final shifts, accuracies, gaps), group statistics, the noise floor's
// fold. Pure: no DOM. docs/science.md defines every quantity named here.

import { lastFinite } from "./configs.js";
import { finite } from "./format.js";
import { stagesOf } from "./groups.js";

// The summary keys the engine writes, in one place.
export const SUMMARY = {
  shift: "shift_by_layer", // bnlab's statistic: mean over channels of max(r_c, 1/r_c)
  shiftLi: "shift_li_by_layer", // Li et al.'s layer-level statistic
  predicted: "shift_predicted_by_layer", // closed form from the measured BN input (and weights)
  floor: "shift_floor_by_layer", // what bnlab's statistic reads with no shift at all
  liFloor: "shift_li_floor_by_layer", // the same for Li et al.'s statistic
  perChannel: "shift_per_channel", // final per-channel shift, per layer
  eval: "test_acc_eval",
  trainMode: "test_acc_train_mode", // real model.train(): dropout on, BN on batch statistics
  trainBn: "test_acc_train_bn", // BN alone in train mode, dropout off
  recal: "test_acc_recalibrated",
};

// Per-layer series keys (per probe step). The story asks the API for those the server knows.
export const SERIES = {
  shift: "shift",
  shiftLi: "shift_li",
  floor: "shift_floor", // noise floor of bnlab's statistic at this probe's sample sizes
  liFloor: "shift_li_floor", // noise floor of Li et al.'s statistic
  gradNorm: "grad_norm",
  // signed per-channel log(eval_var_c / running_var_c): quartiles over the layer's channels
  logQ1: "shift_log_q1",
  logMedian: "shift_log_median",
  logQ3: "shift_log_q3",
};

// The preset a run came from: presets tag every config with `preset:<id>` (backend/presets).
export const PRESET_TAG = "preset:"; // backend/presets/__init__.py PRESET_TAG

export function presetIdOf(run) {
  const tag = (run.tags ?? run.config?.tags ?? []).find((t) => t.startsWith(PRESET_TAG));
  return tag ? tag.slice(PRESET_TAG.length) : null;
}

export { finite };

// n, mean, sample standard deviation (n − 1), min, max of the finite values.
export function stats(values) {
  const v = values.filter(finite);
  const n = v.length;
  if (!n) return { n: 0, mean: null, sd: null, min: null, max: null };
  const mean = v.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : null;
  return { n, mean, sd, min: Math.min(...v), max: Math.max(...v) };
}

// Pearson correlation of paired values (pairs with a missing side are dropped).
export function pearson(xs, ys) {
  const pairs = xs.map((x, i) => [x, ys[i]]).filter(([x, y]) => finite(x) && finite(y));
  const n = pairs.length;
  if (n < 3) return { r: null, n };
  const mx = pairs.reduce((a, [x]) => a + x, 0) / n;
  const my = pairs.reduce((a, [, y]) => a + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (const [x, y] of pairs) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
    syy += (y - my) ** 2;
  }
  return { r: sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : null, n };
}

// Test batch sizes the runs report a train-mode accuracy for, ascending.
export function trainModeSizes(runs) {
  const sizes = new Set();
  for (const run of runs) {
    for (const key of [SUMMARY.trainMode, SUMMARY.trainBn]) {
      for (const [bs, v] of Object.entries(run.summary?.[key] ?? {})) if (finite(v)) sizes.add(bs);
    }
  }
  return [...sizes].sort((a, b) => Number(a) - Number(b));
}

// One run's accuracies at test batch size `bs` for the train-mode measures, and the gaps:
// recalibrated − eval (what the shift costs), eval − train mode (what forgetting eval() costs).
export function accuracies(run, bs) {
  const s = run.summary ?? {};
  const pick = (v) => (finite(v) ? v : null);
  const evalAcc = pick(s[SUMMARY.eval]);
  const trainMode = pick(s[SUMMARY.trainMode]?.[bs]);
  const trainBn = pick(s[SUMMARY.trainBn]?.[bs]);
  const recal = pick(s[SUMMARY.recal]);
  const diff = (a, b) => (a !== null && b !== null ? a - b : null);
  return {
    eval: evalAcc,
    trainMode,
    trainBn,
    recal,
    recalGap: diff(recal, evalAcc),
    trainGap: diff(evalAcc, trainMode),
  };
}

// The layers of a run that carry BN statistics, in order: [{index, name, layer}].
export function bnLayers(data) {
  return (data?.layers ?? [])
    .filter((l) => ["train_var", "eval_var", "shift"].some((k) => (l[k] ?? []).some(finite)))
    .map((l) => ({ index: l.index, name: l.name, layer: l }));
}

// A run's final value of summary key `key` for a layer, else the last probe's `seriesKey`.
function finalOf(data, name, key, seriesKey) {
  const fromSummary = data?.run.summary?.[key]?.[name];
  if (finite(fromSummary)) return fromSummary;
  const layer = data?.layers.find((l) => l.name === name);
  return seriesKey && layer ? lastFinite(layer[seriesKey]) : null;
}

// Per BN layer of one run: bnlab's shift, Li et al.'s, the prediction and the noise floor.
export function shiftRows(data) {
  const names = new Set(bnLayers(data).map((l) => l.name));
  for (const key of [SUMMARY.shift, SUMMARY.shiftLi, SUMMARY.predicted]) {
    for (const name of Object.keys(data?.run.summary?.[key] ?? {})) names.add(name);
  }
  return [...names].map((name) => ({
    name,
    shift: finalOf(data, name, SUMMARY.shift, SERIES.shift),
    shiftLi: finalOf(data, name, SUMMARY.shiftLi, SERIES.shiftLi),
    predicted: finalOf(data, name, SUMMARY.predicted, null),
    floor: finalOf(data, name, SUMMARY.floor, SERIES.floor),
    liFloor: finalOf(data, name, SUMMARY.liFloor, SERIES.liFloor),
  }));
}

// The single "final shift" of a run for the correlation with accuracy: the mean over BN layers
// of Li et al.'s statistic when recorded, else of bnlab's. Returns {value, statistic}.
export function runShift(data) {
  const rows = shiftRows(data);
  const li = stats(rows.map((r) => r.shiftLi));
  if (li.n) return { value: li.mean, statistic: "Li et al." };
  const ours = stats(rows.map((r) => r.shift));
  return { value: ours.mean, statistic: "bnlab per-channel" };
}

// Last finite grad_norm per layer (every hidden block, with or without BN), by index.
export function gradByDepth(data) {
  return (data?.layers ?? [])
    .map((l) => ({ index: l.index, name: l.name, value: lastFinite(l[SERIES.gradNorm]) }))
    .filter((p) => finite(p.value));
}

// fold(s) = E[max(R, 1/R)] for log R ~ N(0, s²) = 2·exp(s²/2)·Φ(s): what bnlab's statistic reads
// with no shift. Its inverse gives back s, the spread of a channel's log-ratio from noise alone.
export function foldMean(s) {
  return Math.exp((s * s) / 2) * (1 + erf(s / Math.SQRT2));
}

export function unfold(floor) {
  if (!finite(floor) || floor <= 1) return finite(floor) ? 0 : null;
  let lo = 0;
  let hi = 1;
  while (foldMean(hi) < floor && hi < 64) hi *= 2;
  for (let i = 0; i < 60; i += 1) {
    const mid = (lo + hi) / 2;
    if (foldMean(mid) < floor) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): plenty for a band on a chart.
export function erf(x) {
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const poly =
    t *
    (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign * (1 - poly * Math.exp(-a * a));
}

// Layer names in depth order over every compared run.
export function layerOrder(ctx) {
  const names = [];
  for (const entry of ctx.entries) {
    for (const run of entry.runs) {
      for (const row of shiftRows(ctx.data.get(run.id)))
        if (!names.includes(row.name)) names.push(row.name);
    }
  }
  return names;
}

// The BN layer names grouped by stage in depth order, [{stage, names}].
export function layerStages(runs, names) {
  const byName = new Map();
  for (const run of runs) for (const p of run.layer_places ?? []) byName.set(p.name, p);
  return stagesOf(
    names,
    names.map((_, i) => i),
    names.map((n) => byName.get(n) ?? n),
  ).map((st) => ({ stage: st.stage, names: st.indices.map((i) => names[i]) }));
}
