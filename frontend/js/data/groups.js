// Grouping runs by any config field, mean with a min/max or ±sd band, BN layers by stage, and
// the x-axis by step, epoch or wall time: the compare view's pure helpers for many runs and
// deep nets. No DOM.

import { configValue, differingPaths, entries as seedEntries, labelFor } from "./configs.js";
import { shortPath, shortValue } from "./fields.js";

/**
 * Entries to draw: `by` = "" (one per run), "seed" (runs differing only in train.seed) or a
 * config path (one entry per value of that field). Each entry: {key, runs, label}.
 */
// Deep nets (50-300 BN layers): at most this many layers get a chart each (pick a stage or a
// layer for the others), and past this many a layer menu or table goes stage by stage.
export const MAX_LAYER_CHARTS = 12;
export const MAX_FLAT_LAYERS = 24;
// Per-run panels (legend, tables) start open up to this many entries, collapsed past it.
export const LEGEND_OPEN_UP_TO = 12;
export const TABLES_OPEN_UP_TO = 8;

const UNSET = "unset"; // the group of runs without the field (script runs, older configs)

export function groupEntries(runs, by) {
  if (!by) return seedEntries(runs, { bySeed: false });
  if (by === "seed") return seedEntries(runs, { bySeed: true });
  const groups = new Map();
  for (const run of runs) {
    const value = configValue(run, by);
    const key = value === undefined ? UNSET : JSON.stringify(value);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(run);
  }
  return [...groups.entries()].map(([key, members]) => ({
    key: `${by}=${key}`,
    runs: members,
    label: `${shortPath(by)}=${key === UNSET ? "(not set)" : shortValue(JSON.parse(key))} (n=${members.length})`,
  }));
}

export { differingPaths, labelFor };

// Mean and band at every x any member has: band "minmax" (lo/hi = min/max) or "sd" (mean ± the
// sample standard deviation; a single value has no spread, so its band is the value itself).
export function aggregateBand(series, band = "minmax") {
  const byX = new Map();
  for (const { x, y } of series) {
    x.forEach((xv, i) => {
      const v = y[i];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      if (!byX.has(xv)) byX.set(xv, []);
      byX.get(xv).push(v);
    });
  }
  const x = [...byX.keys()].sort((a, b) => a - b);
  const mean = [];
  const lo = [];
  const hi = [];
  for (const xv of x) {
    const vs = byX.get(xv);
    const m = vs.reduce((a, b) => a + b, 0) / vs.length;
    mean.push(m);
    if (band === "sd") {
      const sd =
        vs.length > 1 ? Math.sqrt(vs.reduce((a, v) => a + (v - m) ** 2, 0) / (vs.length - 1)) : 0;
      lo.push(m - sd);
      hi.push(m + sd);
    } else {
      lo.push(Math.min(...vs));
      hi.push(Math.max(...vs));
    }
  }
  return { x, mean, lo, hi };
}

// A layer's stage: from the run's layer_places record ({stage, unit, place}, the API reads it
// from the name) when there is one, else from the name: "stage2.unit3.bn2" → "stage2",
// "blocks.4.norm" → "blocks".
export function stageOf(layer) {
  if (layer && typeof layer === "object") {
    if (layer.stage !== undefined && layer.stage !== null) return `stage${layer.stage}`;
    if (layer.place === "head") return "head";
    return stageOf(layer.name ?? "");
  }
  const name = String(layer);
  const match = name.match(/^(stage\d+|block\d+|layer\d+|dense\d+|transition\d+)/i);
  if (match) return match[1];
  const first = name.split(".")[0];
  return first || "net";
}

// Layers (by index) grouped by stage, in depth order: [{stage, indices}].
export function stagesOf(names, indices, places = null) {
  const out = [];
  for (const i of indices) {
    const stage = stageOf(places?.[i] ?? names[i] ?? "");
    if (!out.length || out.at(-1).stage !== stage) out.push({ stage, indices: [] });
    out.at(-1).indices.push(i);
  }
  return out;
}

/**
 * A function step → x for one run: "step" (itself), "epoch" (interpolated from the run's own
 * (step, epoch) metric points) or "wall" (seconds since the run's first probe, from the probes'
 * recorded wall_time; runs recorded before it existed: the mean pace steps_per_s of the summary,
 * else the start/finish stamps). Null when the run lacks the data.
 */
export function xMapper(mode, data) {
  if (mode === "epoch") {
    const steps = data.metrics?.step ?? [];
    const epochs = data.metrics?.epoch ?? [];
    const pts = steps.map((s, i) => [s, epochs[i]]).filter(([, e]) => Number.isFinite(e));
    if (pts.length < 2) return null;
    return (step) => interpolate(pts, step);
  }
  if (mode === "wall") {
    // The worker stamps each probe's wall time (metrics.wall_time, UNIX seconds): seconds since
    // the run's first probe, interpolated between probes for the layer series.
    const steps = data.metrics?.step ?? [];
    const walls = data.metrics?.wall_time ?? [];
    const pts = steps.map((s, i) => [s, walls[i]]).filter(([, w]) => Number.isFinite(w));
    if (pts.length >= 2) {
      const t0 = pts[0][1];
      const rel = pts.map(([s, w]) => [s, w - t0]);
      return (step) => interpolate(rel, step);
    }
    // Runs recorded before wall_time existed: the run's mean pace.
    const run = data.run;
    let rate = run.summary?.steps_per_s;
    if (!(rate > 0) && run.started_at) {
      const end = run.finished_at ?? run.heartbeat_at;
      const seconds = end ? (Date.parse(end) - Date.parse(run.started_at)) / 1000 : 0;
      rate = seconds > 0 && run.step > 0 ? run.step / seconds : null;
    }
    return rate > 0 ? (step) => step / rate : null;
  }
  return (step) => step;
}

function interpolate(pts, x) {
  if (x <= pts[0][0]) return pts[0][1] + (x - pts[0][0]) * slope(pts[0], pts[1]);
  for (let i = 1; i < pts.length; i += 1) {
    if (x <= pts[i][0]) return pts[i - 1][1] + (x - pts[i - 1][0]) * slope(pts[i - 1], pts[i]);
  }
  const n = pts.length;
  return pts[n - 1][1] + (x - pts[n - 1][0]) * slope(pts[n - 2], pts[n - 1]);
}

function slope(a, b) {
  return b[0] === a[0] ? 0 : (b[1] - a[1]) / (b[0] - a[0]);
}

// Inverse of a monotone mapper on a range (for the step window of a zoomed epoch/wall axis).
export function stepRange(mapper, [x0, x1], maxStep) {
  const find = (target) => {
    let lo = 0;
    let hi = Math.max(1, maxStep);
    for (let k = 0; k < 40; k += 1) {
      const mid = (lo + hi) / 2;
      if (mapper(mid) < target) lo = mid;
      else hi = mid;
    }
    return lo;
  };
  return [Math.max(0, Math.floor(find(x0))), Math.ceil(find(x1))];
}

// A depth axis (numeric layer index) with a tick at the first layer of each stage, for charts of
// one value per layer; {} when the net has a single stage (plain numeric ticks then).
export function depthTicks(names, places = null) {
  const stages = stagesOf(
    names,
    names.map((_, i) => i),
    places,
  );
  if (stages.length < 2) return {};
  return { tickvals: stages.map((st) => st.indices[0]), ticktext: stages.map((st) => st.stage) };
}

// The layers a view draws one chart each for, out of `indices` (the layers with data): a picked
// stage narrows them to that stage, a picked layer to itself, and at most `max` are drawn.
// Returns {stages, stage, pool, shown} (stage: the picked stage's name or "all").
export function pickLayers(
  names,
  indices,
  places,
  { stage = "all", layer = "all", max = 12 } = {},
) {
  const stages = stagesOf(names, indices, places);
  const picked = stages.find((st) => st.stage === stage);
  const pool = picked ? picked.indices : indices;
  const shown =
    layer !== "all" && pool.includes(Number(layer)) ? [Number(layer)] : pool.slice(0, max);
  return { stages, stage: picked ? picked.stage : "all", pool, shown };
}
