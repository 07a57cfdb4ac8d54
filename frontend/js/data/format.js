// Number formats, one per kind of quantity, shared by every table, group row and chart hover:
// accuracies as percentages with one decimal ("92.6%"), differences of accuracies in points
// ("+1.2 pt"), shifts and other statistics with three decimals. Pure: no DOM.

export const DASHLESS = "–"; // shown where a value is missing

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASHLESS;
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

export const finite = (v) => typeof v === "number" && Number.isFinite(v);

// A statistic (a shift, its floor, its prediction) always with `digits` decimals: 2 → "2.000".
export function fixed(value, digits = 3) {
  return finite(value) ? value.toFixed(digits) : DASHLESS;
}

// An accuracy (a fraction 0..1) as a percentage: 0.9264 → "92.6%".
export function pct(value) {
  return finite(value) ? `${(100 * value).toFixed(1)}%` : DASHLESS;
}

// A difference of two accuracies in percentage points: 0.012 → "+1.2 pt".
export function points(value) {
  return finite(value) ? `${value >= 0 ? "+" : ""}${(100 * value).toFixed(1)} pt` : DASHLESS;
}

// A spread of accuracies (a standard deviation) in points, unsigned: 0.012 → "1.2 pt".
export function sdPoints(value) {
  return finite(value) ? `${(100 * value).toFixed(1)} pt` : DASHLESS;
}

// Summary and metric keys that hold an accuracy: test_acc_eval, val_acc,
// summary.test_acc_train_mode.8, ... (an "acc" word between separators).
const ACCURACY = /(^|[._])acc([._]|$)/;

export function isAccuracy(key) {
  return ACCURACY.test(String(key));
}

// Keys that hold a difference of accuracies (the sweep view's recalibrated − eval).
const ACCURACY_GAIN = /(^|[._])(recal_gain|acc_gap)([._]|$)/;

export function isAccuracyGain(key) {
  return ACCURACY_GAIN.test(String(key));
}

// A value of column/metric `key` as the tables show it.
export function metricValue(key, value) {
  if (isAccuracyGain(key)) return points(value);
  if (isAccuracy(key)) return pct(value);
  return fmt(value);
}

// A group's {n, mean, sd} of `key`: "89.5% ± 1.2 pt" for accuracies, "1.234 ± 0.056" else
// (the sample sd; a lone value has none).
export function groupStat(key, stat) {
  if (!stat || !stat.n) return DASHLESS;
  const accuracy = isAccuracy(key) || isAccuracyGain(key);
  const mean = metricValue(key, stat.mean);
  if (stat.sd === null || stat.sd === undefined) return mean;
  return `${mean} ± ${accuracy ? sdPoints(stat.sd) : fmt(stat.sd)}`;
}

// Plotly renders a subset of HTML in names and titles; escaping keeps user text literal.
export function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// "2026-11-23T19:25:56.340652+00:00" → "2026-11-23 19:25:56 UTC" (server time, as stored).
export function when(stamp) {
  return stamp
    ? String(stamp)
        .replace("T", " ")
        .replace(/\.\d+/, "")
        .replace(/\+00:00$|Z$/, " UTC")
    : DASHLESS;
}

// "3 runs", "1 run".
export function plural(n, word, many = `${word}s`) {
  return `${n} ${n === 1 ? word : many}`;
}
