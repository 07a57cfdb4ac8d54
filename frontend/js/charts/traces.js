// Plotly trace builders: lines, min/max bands, smoothing, and merging many look-alike lines
// into one trace. Pure (no DOM): charts/plotly.js says whether WebGL may be used.

import { plotText } from "../data/format.js";

export const DASH = { train_var: "solid", eval_var: "dash", running_var: "dot" };

// Above this many points in one figure, SVG gets sluggish; WebGL stays smooth.
export const GL_POINTS = 5000;

let webgl = () => false; // charts/plotly.js installs the browser's answer

export function useWebgl(fn) {
  webgl = fn;
}

export function traceType(points) {
  return points > GL_POINTS && webgl() ? "scattergl" : "scatter";
}

// Debiased exponential moving average (TensorBoard's smoothing), skipping missing values.
export function smooth(values, weight) {
  if (!weight || weight <= 0) return values;
  let last = 0;
  let norm = 0;
  return values.map((v) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    norm = norm * weight + (1 - weight);
    return last / norm;
  });
}

// The points of a series that has a value: val_acc_train_mode is measured at one probe in
// probe.train_mode_every (null at the others), and a line through nulls would draw nothing.
export const SPARSE_METRICS = new Set(["val_acc_train_mode"]);

export function measuredOnly({ x, y }) {
  const keep = (y ?? []).flatMap((v, i) => (v === null || v === undefined ? [] : [i]));
  return { x: keep.map((i) => x[i]), y: keep.map((i) => y[i]) };
}

// `yFormat`: the hover's d3 format (".1%" for accuracies, like the tables).
export function line({
  x,
  y,
  name,
  color,
  dash = "solid",
  width = 1.6,
  group,
  showlegend = true,
  meta,
  hoverLabel,
  points,
  yFormat = ".4g",
}) {
  return {
    type: traceType(points ?? x.length),
    mode: "lines",
    x,
    y,
    name: plotText(name),
    legendgroup: group,
    showlegend,
    line: { color, dash, width },
    meta,
    hovertemplate: `%{y:${yFormat}}<extra>${plotText(hoverLabel ?? name)}</extra>`,
  };
}

function rgba(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

// A min/max band: the upper edge, then the lower edge filled up to it.
export function band({ x, lo, hi, name, color, group, meta }) {
  const common = {
    type: traceType(x.length),
    mode: "lines",
    x,
    name: plotText(name),
    legendgroup: group,
    showlegend: false,
    hoverinfo: "skip",
    line: { width: 0, color },
    meta,
  };
  return [
    { ...common, y: hi },
    { ...common, y: lo, fill: "tonexty", fillcolor: rgba(color, 0.15) },
  ];
}

// A figure with many points in total draws all its lines with WebGL (one context per figure).
export function preferGl(traces, allowed) {
  const lines = traces.filter((t) => t.type === "scatter" && t.mode === "lines");
  const points = lines.reduce((n, t) => n + (t.x?.length ?? 0), 0);
  if (points <= GL_POINTS || !allowed) return traces;
  return traces.map((t) => (lines.includes(t) ? { ...t, type: "scattergl" } : t));
}

// Plotly's cost grows with the number of traces far more than with their points (a chart of
// 200 line traces x 240 points takes ~750 ms in software rendering, the same points in 20 traces
// a fraction of that). Past MERGE_ABOVE traces (about 40 runs in a layer chart), lines that
// look identical (same colour, dash, width, opacity, marker) become one trace with gaps between
// the runs; each point keeps its own name in customdata, so the hover still says which run it
// is. Bands (fills) are left alone. Below it every curve stays its own trace.
export const MERGE_ABOVE = 80;

function mergeKey(t) {
  if (t.type !== "scatter" && t.type !== "scattergl") return null;
  if (
    t.fill ||
    t.error_y ||
    t.meta?.band ||
    Array.isArray(t.marker?.color) ||
    Array.isArray(t.text)
  )
    return null;
  return JSON.stringify([
    t.type,
    t.mode,
    t.line,
    t.marker,
    t.opacity ?? 1,
    t.xaxis,
    t.yaxis,
    t.connectgaps,
  ]);
}

function appendTrace(m, t) {
  const label = String(t.hovertemplate ?? "").match(/<extra>(.*)<\/extra>/)?.[1] ?? t.name;
  if (m.x.length) {
    m.x.push(null);
    m.y.push(null);
    m.customdata.push(null);
  }
  for (let k = 0; k < t.x.length; k += 1) {
    m.x.push(t.x[k]);
    m.y.push(t.y[k]);
    m.customdata.push(label);
  }
  m.names.push(t.name);
  m.runs.push(...(t.meta?.runs ?? (t.meta?.run !== undefined ? [t.meta.run] : [])));
}

function finishMerged(t) {
  if (!t.names) return t;
  const { names, runs, ...trace } = t;
  if (names.length === 1)
    return { ...trace, customdata: undefined, name: names[0], showlegend: t.showlegend };
  const format = String(trace.hovertemplate ?? "").match(/^%\{y:([^}]*)\}/)?.[1] ?? ".4g";
  return {
    ...trace,
    name: `${names.length} curves`,
    connectgaps: false,
    hovertemplate: `%{y:${format}}<extra>%{customdata}</extra>`,
    meta: { ...trace.meta, runs: [...new Set(runs)], merged: names.length },
  };
}

export function mergeTraces(traces) {
  if (traces.length <= MERGE_ABOVE) return traces;
  const out = [];
  const merged = new Map();
  traces.forEach((t, i) => {
    // The upper edge of a band is the trace before a "tonexty" fill: keep the pair together.
    const key = traces[i + 1]?.fill === "tonexty" ? null : mergeKey(t);
    if (!key) {
      out.push(t);
      return;
    }
    let m = merged.get(key);
    if (!m) {
      m = { ...t, x: [], y: [], customdata: [], names: [], runs: [], showlegend: false };
      merged.set(key, m);
      out.push(m);
    }
    appendTrace(m, t);
  });
  return out.map(finishMerged);
}
