// The sweep view's figures: final metrics of a run, parallel-coordinates dimensions of config
// fields, and the runs inside brushed ranges. Pure: no DOM.

import { configValue } from "./configs.js";
import { shortValue } from "./fields.js";

function diff(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) ? a - b : null;
}

// Final metrics of a run, from its summary (what a sweep is judged by). `format`: how a value
// reads (accuracies as percentages, their differences in points).
export const METRICS = {
  test_acc_eval: {
    label: "test acc (eval)",
    format: "accuracy",
    of: (r) => r.summary?.test_acc_eval,
  },
  test_acc_recalibrated: {
    label: "test acc (recalibrated)",
    format: "accuracy",
    of: (r) => r.summary?.test_acc_recalibrated,
  },
  recal_gain: {
    label: "recalibrated − eval",
    format: "points",
    of: (r) => diff(r.summary?.test_acc_recalibrated, r.summary?.test_acc_eval),
  },
  max_shift: {
    label: "max variance shift",
    format: "number",
    of: (r) => {
      const vs = Object.values(r.summary?.shift_by_layer ?? {}).filter(Number.isFinite);
      return vs.length ? Math.max(...vs) : null;
    },
  },
};

// A parallel-coordinates dimension for a config path: numbers as they are, anything else as
// categories (ticks named by the value).
export function dimension(runs, path) {
  const values = runs.map((r) => configValue(r, path) ?? null);
  if (values.every((v) => typeof v === "number" || v === null)) {
    return { label: path, values: values.map((v) => (v === null ? NaN : v)), path };
  }
  const cats = [...new Set(values.map((v) => JSON.stringify(v)))].sort();
  return {
    label: path,
    values: values.map((v) => cats.indexOf(JSON.stringify(v))),
    path,
    tickvals: cats.map((_, i) => i),
    ticktext: cats.map((c) => shortValue(JSON.parse(c))),
  };
}

// The runs inside every brushed range of the parallel coordinates.
export function brushed(dims, n) {
  const keep = [];
  for (let i = 0; i < n; i += 1) {
    const inside = dims.every((d) => {
      const ranges = d.constraintrange;
      if (!ranges || !ranges.length) return true;
      const list = Array.isArray(ranges[0]) ? ranges : [ranges];
      return list.some(([lo, hi]) => d.values[i] >= lo && d.values[i] <= hi);
    });
    if (inside) keep.push(i);
  }
  return keep;
}
