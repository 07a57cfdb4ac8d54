// Verdicts in words for a measured variance shift, and what to do about it, drawn from the
// measurements (docs/dashboard.md, "Reading the verdicts"). Pure: no DOM.
//
// bnlab's per-channel shift reads its noise floor (> 1), not 1, when nothing is shifted:
// max(r, 1/r) folds sampling noise upward. The noise level is the floor's excess over 1, and a
// shift is judged by how many noise levels its own excess is: 2.035 against a floor of 1.050
// is 1.035 / 0.050 = 21 noise levels, a real shift.

import { finite, fixed, points, pct } from "./format.js";
import { layerLabel } from "./layers.js";
import { accuracies, shiftRows, trainModeSizes } from "./story.js";

// Rules of thumb (documented in docs/dashboard.md): up to 1.5 noise levels is what an
// unshifted layer reads, above 3 no sampling noise at the probe's sample size explains it.
export const NOISE = { small: 1.5, real: 3 };
// A measured shift matches its prediction when it is within the noise, or within 15 % of the
// predicted excess over 1.
export const PREDICTION_TOLERANCE = 0.15;
export const RECALIBRATION_WORTH = 0.005; // recalibrated − eval: from half a point up
export const TRAIN_MODE_COST = 0.05; // eval − train mode at test time: from 5 points up

// The studies (backend/presets) that show each remedy.
export const STUDIES = {
  moveDropout: "variance_shift",
  lessNoise: "dropout_equal_noise",
  recalibrate: "population_stats",
  lagging: "population_stats",
  evalMode: "population_stats",
  noShift: "variance_shift",
};

const times = (m) => `${m >= 10 ? Math.round(m) : m.toFixed(1)}×`;

// How many noise levels (floor − 1) the shift's excess over 1 is; null without a floor.
export function noiseMultiple(shift, floor) {
  if (!finite(shift) || !finite(floor) || floor <= 1) return null;
  return Math.max(0, shift - 1) / (floor - 1);
}

/** The measured shift against its prediction: null without a prediction. */
export function predictionVerdict(shift, predicted, floor) {
  if (!finite(shift) || !finite(predicted)) return null;
  const noise = finite(floor) && floor > 1 ? floor - 1 : 0;
  const allowed = Math.max(noise, PREDICTION_TOLERANCE * Math.max(predicted - 1, 0));
  const diff = shift - predicted;
  if (Math.abs(diff) <= allowed) {
    return { level: "matches", text: `matches the prediction (${fixed(predicted)})` };
  }
  if (diff > 0) {
    return {
      level: "above",
      text:
        `above the prediction (${fixed(predicted)}): more than this ` +
        "layer's own dropout explains, it inherits shift from the layers before it",
    };
  }
  return { level: "below", text: `below the prediction (${fixed(predicted)})` };
}

/**
 * A layer's verdict from its final figures {shift, floor, predicted}: level "none" | "small"
 * | "real" | "unknown", the noise multiple, a sentence, and the prediction's verdict.
 */
export function shiftVerdict({ shift, floor, predicted }) {
  const prediction = predictionVerdict(shift, predicted, floor);
  if (!finite(shift))
    return { level: "unknown", multiple: null, text: "not measured yet", prediction };
  const multiple = noiseMultiple(shift, floor);
  if (multiple === null) {
    return {
      level: "unknown",
      multiple,
      prediction,
      text: "no noise floor recorded: a shift cannot be told from sampling noise",
    };
  }
  if (multiple <= NOISE.small)
    return { level: "none", multiple, prediction, text: "at the noise floor: no shift" };
  const level = multiple <= NOISE.real ? "small" : "real";
  const what = level === "real" ? "a real shift" : "a small shift, near the noise";
  return { level, multiple, prediction, text: `${times(multiple)} the noise level: ${what}` };
}

const RANK = { real: 3, small: 2, none: 1, unknown: 0 };

// Whether a run has dropout inside its blocks (before some BN), as far as the run says.
export function dropoutInBlocks(run) {
  if ((run.kind ?? "engine") === "script") return (run.summary?.model?.dropouts ?? []).length > 0;
  const m = run.config?.model ?? {};
  if (!(m.dropout?.rate > 0)) return false;
  return (
    (m.block ?? []).includes("dropout") || !["none", "head", null, undefined].includes(m.dropout_at)
  );
}

// The dropout kinds of a run (engine: its config; script: the modules the probe found).
function dropoutKinds(run) {
  if ((run.kind ?? "engine") === "script")
    return (run.summary?.model?.dropouts ?? []).map((d) => d.kind);
  return [run.config?.model?.dropout?.kind].filter(Boolean);
}

/**
 * One run's facts for its verdict (`layerInfo`: its layers' names, data/layers.js): every BN layer's figures with their verdict, the worst
 * layer, and the accuracy gaps (recalibrated − eval, eval − train mode at the largest test
 * batch size).
 */
export function runFacts(data, layerInfo = new Map()) {
  const run = data.run;
  const layers = shiftRows(data).map((row) => ({
    ...row,
    label: layerLabel(row.name, layerInfo.get(row.name)),
    verdict: shiftVerdict(row),
  }));
  const worst = layers.reduce((best, row) => {
    if (!best) return row;
    const a = RANK[row.verdict.level];
    const b = RANK[best.verdict.level];
    if (a !== b) return a > b ? row : best;
    return (row.verdict.multiple ?? row.shift ?? 0) > (best.verdict.multiple ?? best.shift ?? 0)
      ? row
      : best;
  }, null);
  const bs = trainModeSizes([run]).at(-1) ?? null;
  const acc = accuracies(run, bs);
  return {
    run,
    layers,
    worst,
    level: worst?.verdict.level ?? "unknown",
    bs,
    acc,
    recalGain: acc.recalGap,
    trainGap: acc.trainGap,
    dropout: dropoutInBlocks(run),
    kinds: dropoutKinds(run),
  };
}

// "blocks.1.bn: shift 2.035, 21× the noise level: a real shift; matches the prediction (1.980)".
export function layerSentence(row) {
  const v = row.verdict;
  const floor = finite(row.floor) ? ` (noise floor ${fixed(row.floor)})` : "";
  const pred = v.prediction ? `; ${v.prediction.text}` : "";
  return `${row.label ?? row.name}: shift ${fixed(row.shift)}${floor}, ${v.text}${pred}`;
}

function span(values, format) {
  const v = values.filter(finite);
  if (!v.length) return "";
  const lo = Math.min(...v);
  const hi = Math.max(...v);
  return lo === hi ? format(lo) : `${format(lo)} to ${format(hi)}`;
}

/**
 * What to do, drawn from the runs' facts: [{id, text, detail, runs: [ids], study}], most
 * important first. Each item names the runs it applies to and the study that shows it.
 */
export function advice(facts) {
  const items = [];
  const add = (id, list, text, detail) => {
    if (list.length)
      items.push({ id, text, detail, runs: list.map((f) => f.run.id), study: STUDIES[id] });
  };
  const real = facts.filter((f) => f.level === "real");
  const withDropout = real.filter((f) => f.dropout);
  add(
    "moveDropout",
    withDropout,
    "Move dropout after the last BN layer (only before the classifier).",
    "Dropout before a BN layer makes the variance BN sees in training larger than at inference; after the last BN it shifts nothing (Li et al. 2019).",
  );
  const noisy = withDropout.filter((f) =>
    f.kinds.some((k) => k === "bernoulli" || k === "gaussian"),
  );
  add(
    "lessNoise",
    noisy,
    "Or put less noise before BN: a lower rate, or uniform dropout (Uout).",
    "The shift grows with the dropout's noise variance: Uout shifts less at the same rate because it adds less noise, not because of its form.",
  );
  const recal = facts.filter((f) => finite(f.recalGain) && f.recalGain >= RECALIBRATION_WORTH);
  add(
    "recalibrate",
    recal,
    `Recalibrate BN after training: ${span(
      recal.map((f) => f.recalGain),
      points,
    )} here.`,
    "Recompute the running statistics on training data with dropout off (PreciseBN); the shift's cost in eval mode comes back.",
  );
  const lagging = real.filter((f) => !f.dropout && !recal.includes(f));
  add(
    "lagging",
    lagging,
    "A shift without dropout in the blocks: the running statistics lag the weights; recalibrate BN after training or raise BN momentum.",
    "BN's running averages mix statistics of earlier weights; recomputing them at the end removes that.",
  );
  const trainMode = facts.filter((f) => finite(f.trainGap) && f.trainGap >= TRAIN_MODE_COST);
  add(
    "evalMode",
    trainMode,
    `Test in eval mode: model.train() at test time costs ${span(
      trainMode.map((f) => f.trainGap),
      (v) => points(v).replace("+", ""),
    )} at batch ${trainMode[0]?.bs}.`,
    "In train mode BN normalises each test batch by its own statistics and dropout stays on: forgetting model.eval() costs accuracy, most at small test batches.",
  );
  if (!items.length) {
    const measured = facts.filter((f) => f.level !== "unknown");
    if (measured.length && measured.every((f) => f.level === "none")) {
      add(
        "noShift",
        measured,
        "No action needed: every BN layer reads at its noise floor.",
        "The measured shift is what sampling noise alone gives; there is no variance shift to remove.",
      );
    }
  }
  return items;
}

// One line over many runs: "A real shift in 50 of 100 runs. Largest: #12 blocks.0.bn: ...".
export function headline(facts) {
  const measured = facts.filter((f) => f.worst && finite(f.worst.shift));
  if (!measured.length) return "No BN layer shift measured yet.";
  const judged = measured.filter((f) => f.level !== "unknown");
  const size = (f) => f.worst.verdict.multiple ?? f.worst.shift;
  const top = [...(judged.length ? judged : measured)].sort((a, b) => size(b) - size(a))[0];
  const largest = `Largest: #${top.run.id} ${layerSentence(top.worst)}.`;
  if (!judged.length) {
    return (
      `No noise floor recorded for ${measured.length === 1 ? "this run" : "these runs"}: a shift cannot ` +
      `be told from sampling noise. ${largest}`
    );
  }
  const real = judged.filter((f) => f.level === "real").length;
  const unjudged = measured.length - judged.length;
  const rest = unjudged ? ` (${unjudged} more without a noise floor)` : "";
  return `A real shift in ${real} of ${judged.length} runs${rest}. ${largest}`;
}

// The run page's accuracy line: "eval 90.1%, recalibrated 92.6% (+2.5 pt), train mode @64 …".
export function accuracyLine(f) {
  const parts = [];
  if (finite(f.acc.eval)) parts.push(`eval ${pct(f.acc.eval)}`);
  if (finite(f.acc.recal)) parts.push(`recalibrated ${pct(f.acc.recal)} (${points(f.recalGain)})`);
  if (finite(f.acc.trainMode)) parts.push(`train mode @${f.bs} ${pct(f.acc.trainMode)}`);
  return parts.join(", ");
}
