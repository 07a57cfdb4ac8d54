// The compare view's traces (views/compare.js lays the charts out): per BN layer the
// train-time, inference-time and running variance of every entry; validation accuracy in eval
// and train mode; the gradient cosine; the final shift by depth. Each function takes the
// CompareContext (data/context.js) and returns Plotly traces; nothing here fetches or draws.

import { aggregateBand } from "../data/groups.js";
import { lastFinite } from "../data/configs.js";
import { DASH, SPARSE_METRICS, band, line, measuredOnly, smooth } from "./traces.js";

// One entry's curve for a series: a line per run, or mean + min/max band for a group.
function curveTraces(entry, colourOf, getSeries, { key, dash, opts, legend, meta, yFormat }) {
  const series = entry.runs.map((run) => getSeries(run.id, key)).filter(Boolean);
  if (!series.length) return [];
  const color = colourOf(entry);
  const name = entry.label;
  const base = {
    name,
    color,
    dash,
    group: entry.key,
    showlegend: legend,
    yFormat,
    hoverLabel: `${name} · ${key}`,
    meta: { ...meta, series: key, runs: entry.runs.map((r) => r.id) },
  };
  // Smoothing keeps the raw curve, faint and without a legend entry, under the smoothed one.
  const raw = (x, y) =>
    opts.smoothing > 0
      ? [
          {
            ...line({
              ...base,
              x,
              y,
              width: 1,
              showlegend: false,
              meta: { ...base.meta, raw: true },
            }),
            opacity: 0.25,
          },
        ]
      : [];
  if (series.length === 1) {
    return [
      ...raw(series[0].x, series[0].y),
      line({ ...base, x: series[0].x, y: smooth(series[0].y, opts.smoothing) }),
    ];
  }
  const agg = aggregateBand(series, opts.band);
  return [
    ...raw(agg.x, agg.mean),
    ...band({
      x: agg.x,
      lo: smooth(agg.lo, opts.smoothing),
      hi: smooth(agg.hi, opts.smoothing),
      name,
      color,
      group: entry.key,
      meta: { ...base.meta, band: opts.band },
    }),
    line({ ...base, x: agg.x, y: smooth(agg.mean, opts.smoothing) }),
  ];
}

export function layerTraces(ctx, layerIndex, opts, legend) {
  const keys = ["train_var", "eval_var", ...(opts.running ? ["running_var"] : [])];
  const getSeries = (id, key) => {
    const layer = ctx.data.get(id)?.layers.find((l) => l.index === layerIndex);
    return layer ? ctx.onX(id, { x: layer.step, y: layer[key] }) : null;
  };
  return ctx.entries.flatMap((entry) =>
    keys.flatMap((key, k) =>
      curveTraces(entry, ctx.colourOf, getSeries, {
        key,
        dash: DASH[key],
        opts,
        legend: legend && k === 0,
        meta: { layer: layerIndex },
      }),
    ),
  );
}

export function accuracyTraces(ctx, opts) {
  const getSeries = (id, key) => {
    const m = ctx.data.get(id)?.metrics;
    if (!m || !m[key]) return null;
    const series = ctx.onX(id, { x: m.step, y: m[key] });
    return series && SPARSE_METRICS.has(key) ? measuredOnly(series) : series;
  };
  const spec = { opts, yFormat: ".1%" };
  return ctx.entries.flatMap((entry) => [
    ...curveTraces(entry, ctx.colourOf, getSeries, {
      ...spec,
      key: "val_acc",
      dash: "solid",
      legend: true,
    }),
    ...curveTraces(entry, ctx.colourOf, getSeries, {
      ...spec,
      key: "val_acc_train_mode",
      dash: "dash",
      legend: false,
    }),
  ]);
}

// Only runs that had probe.grad_noise on carry grad_cos values.
export function hasGradCos(ctx) {
  return [...ctx.data.values()].some((d) => (d.metrics.grad_cos ?? []).some(Number.isFinite));
}

export function gradCosTraces(ctx, opts) {
  const getSeries = (id, key) => {
    const m = ctx.data.get(id)?.metrics;
    return m && (m[key] ?? []).some(Number.isFinite) ? ctx.onX(id, { x: m.step, y: m[key] }) : null;
  };
  return ctx.entries.flatMap((entry) =>
    curveTraces(entry, ctx.colourOf, getSeries, {
      key: "grad_cos",
      dash: "solid",
      opts,
      legend: true,
    }),
  );
}

// Final shift per layer: the summary's value when the run ended, else the last probe's.
function shiftOf(data, layer) {
  const fromSummary = data.run.summary?.shift_by_layer?.[layer.name];
  return Number.isFinite(fromSummary) ? fromSummary : lastFinite(layer.shift);
}

function spread(trace, perRun, y) {
  const lo = y.map((_, i) => Math.min(...perRun.map((r) => r[i] ?? Infinity)));
  const hi = y.map((_, i) => Math.max(...perRun.map((r) => r[i] ?? -Infinity)));
  return {
    ...trace,
    error_y: {
      type: "data",
      symmetric: false,
      array: hi.map((h, i) => h - y[i]),
      arrayminus: lo.map((l, i) => y[i] - l),
      thickness: 1,
      width: 3,
    },
  };
}

export function shiftTraces(ctx, layerNames) {
  return ctx.entries.map((entry) => {
    const perRun = entry.runs.map((run) => {
      const data = ctx.data.get(run.id);
      return layerNames.map((_, i) => {
        const layer = data?.layers.find((l) => l.index === i);
        return layer ? shiftOf(data, layer) : null;
      });
    });
    const y = layerNames.map((_, i) => {
      const vs = perRun.map((r) => r[i]).filter((v) => v !== null);
      return vs.length ? vs.reduce((a, b) => a + b, 0) / vs.length : null;
    });
    // x is the depth (layer index), the name in the hover: 300 names would not fit as ticks.
    const trace = {
      ...line({
        x: layerNames.map((_, i) => i),
        y,
        name: entry.label,
        color: ctx.colourOf(entry),
        group: entry.key,
        meta: { series: "shift", runs: entry.runs.map((r) => r.id) },
      }),
      type: "scatter",
      mode: "lines+markers",
    };
    trace.hovertemplate = `layer %{x}: %{y:.4g}<extra>${trace.name}</extra>`;
    return entry.runs.length > 1 ? spread(trace, perRun, y) : trace;
  });
}

// "1500 raw points per curve, drawn as ≤120 (min/max buckets keep every dip)".
export function rawNote(raws, drawn) {
  const counts = raws.filter((n) => Number.isFinite(n) && n > 0);
  if (!counts.length) return "";
  const max = Math.max(...counts);
  const min = Math.min(...counts);
  const range = min === max ? `${max}` : `${min}–${max}`;
  return max > drawn
    ? `${range} raw points per curve, drawn as ≤${drawn} (min/max buckets keep every dip)`
    : `${range} raw points per curve, all drawn`;
}
