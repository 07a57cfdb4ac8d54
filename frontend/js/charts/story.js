// The story's traces (views/story.js lays the charts out): measured against predicted shift per
// layer with the noise floor, the paper's correlation of shift with accuracy lost, loss,
// gradient norm by depth, and the per-channel shift distribution over training. Each function
// takes the StoryContext (data/context.js) and returns Plotly traces; nothing here fetches.

import { aggregate } from "../data/configs.js";
import { finite, plotText } from "../data/format.js";
import {
  SERIES,
  SUMMARY,
  gradByDepth,
  pearson,
  runShift,
  shiftRows,
  stats,
  unfold,
} from "../data/story.js";
import { band, line } from "./traces.js";

const FLOOR_COLOUR = "#9aa4b1";
const IQR_Z = 0.6745; // the quartiles of a standard normal are ±0.6745

function markers(trace, symbol, size = 7) {
  return {
    ...trace,
    type: "scatter",
    mode: "lines+markers",
    marker: { symbol, size, color: trace.line.color },
  };
}

// Mean over an entry's runs of `field` per layer, with min/max as error bars for a group.
function perLayer(ctx, entry, names, field) {
  const perRun = entry.runs.map((run) => {
    const rows = shiftRows(ctx.data.get(run.id));
    return names.map((name) => rows.find((r) => r.name === name)?.[field] ?? null);
  });
  const columns = names.map((_, i) => stats(perRun.map((r) => r[i])));
  return {
    y: columns.map((c) => c.mean),
    lo: columns.map((c) => c.min),
    hi: columns.map((c) => c.max),
    any: columns.some((c) => c.n > 0),
  };
}

function withSpread(trace, agg, entry) {
  if (entry.runs.length < 2) return trace;
  return {
    ...trace,
    error_y: {
      type: "data",
      symmetric: false,
      thickness: 1,
      width: 3,
      array: agg.hi.map((h, i) => (finite(h) ? h - agg.y[i] : null)),
      arrayminus: agg.lo.map((l, i) => (finite(l) ? agg.y[i] - l : null)),
    },
  };
}

// Final shift per BN layer: Li et al.'s statistic (solid), bnlab's per-channel one (dotted), the
// prediction (dashed, crosses); the grey band is bnlab's noise floor (the reading with no shift).
export function shiftByLayerTraces(ctx, names) {
  const traces = [];
  const floor = names.map(
    (name) =>
      stats(
        ctx.entries.flatMap((e) =>
          e.runs.map((run) => shiftRows(ctx.data.get(run.id)).find((r) => r.name === name)?.floor),
        ),
      ).max,
  );
  if (floor.some(finite)) {
    traces.push({
      type: "scatter",
      mode: "lines",
      x: names,
      y: names.map(() => 1),
      showlegend: false,
      hoverinfo: "skip",
      line: { width: 0, color: FLOOR_COLOUR },
      meta: { series: "floor_base" },
    });
    traces.push({
      type: "scatter",
      mode: "lines",
      x: names,
      y: floor,
      fill: "tonexty",
      fillcolor: "rgba(154,164,177,0.25)",
      line: { width: 0, color: FLOOR_COLOUR },
      name: "noise floor (bnlab statistic, no shift)",
      meta: { series: "floor" },
      hovertemplate: "noise floor %{y:.3f}<extra></extra>",
    });
  }
  for (const entry of ctx.entries) {
    const color = ctx.colourOf(entry);
    const meta = (series) => ({ series, runs: entry.runs.map((r) => r.id) });
    // The prediction is of bnlab's per-channel statistic: that pair is solid and dashed; Li et
    // al.'s layer statistic, which the prediction does not model, is dotted beside them.
    const specs = [
      ["shift", "solid", "circle", "bnlab per-channel"],
      ["predicted", "dash", "x", "predicted (bnlab per-channel)"],
      ["shiftLi", "dot", "square", "Li et al."],
    ];
    for (const [field, dash, symbol, what] of specs) {
      const agg = perLayer(ctx, entry, names, field);
      if (!agg.any) continue;
      const name = `${entry.label} · ${what}`;
      traces.push(
        withSpread(
          markers(
            line({
              x: names,
              y: agg.y,
              name,
              color,
              dash,
              group: entry.key,
              meta: meta(field),
              hoverLabel: name,
              points: names.length,
            }),
            symbol,
            field === "predicted" ? 10 : 7,
          ),
          agg,
          entry,
        ),
      );
    }
  }
  return traces;
}

// One point per run: final shift (x) against accuracy lost to it, recalibrated − eval (y, points).
export function shiftAccuracyTraces(ctx) {
  const xs = [];
  const ys = [];
  let statistic = null;
  const traces = ctx.entries
    .map((entry) => {
      const points = entry.runs
        .map((run) => {
          const data = ctx.data.get(run.id);
          const shift = runShift(data);
          statistic = statistic ?? (finite(shift.value) ? shift.statistic : null);
          const s = run.summary ?? {};
          const lost =
            finite(s[SUMMARY.recal]) && finite(s[SUMMARY.eval])
              ? 100 * (s[SUMMARY.recal] - s[SUMMARY.eval])
              : null;
          xs.push(shift.value);
          ys.push(lost);
          return { id: run.id, x: shift.value, y: lost };
        })
        .filter((p) => finite(p.x) && finite(p.y));
      return {
        type: "scatter",
        mode: "markers",
        x: points.map((p) => p.x),
        y: points.map((p) => p.y),
        text: points.map((p) => `#${p.id}`),
        name: plotText(entry.label),
        legendgroup: entry.key,
        marker: { size: 10, color: ctx.colourOf(entry) },
        meta: { series: "shift_vs_lost", runs: points.map((p) => p.id) },
        hovertemplate: `%{text}: shift %{x:.3f}, lost %{y:.1f} pt<extra>${plotText(entry.label)}</extra>`,
      };
    })
    .filter((t) => t.x.length);
  return { traces, ...pearson(xs, ys), statistic };
}

// Series of one entry: a line for one run, mean + min/max band for a group.
function entryCurve(ctx, entry, getSeries, { key, dash, legend }) {
  const series = entry.runs.map((run) => getSeries(ctx.data.get(run.id), key)).filter(Boolean);
  if (!series.length) return [];
  const color = ctx.colourOf(entry);
  const meta = { series: key, runs: entry.runs.map((r) => r.id) };
  const base = {
    name: entry.label,
    color,
    dash,
    group: entry.key,
    showlegend: legend,
    meta,
    hoverLabel: `${entry.label} · ${key}`,
  };
  if (series.length === 1) return [line({ ...base, x: series[0].x, y: series[0].y })];
  const agg = aggregate(series);
  return [
    ...band({
      x: agg.x,
      lo: agg.lo,
      hi: agg.hi,
      name: entry.label,
      color,
      group: entry.key,
      meta: { ...meta, band: true },
    }),
    line({ ...base, x: agg.x, y: agg.mean }),
  ];
}

const metricSeries = (data, key) => {
  const m = data?.metrics;
  return m && (m[key] ?? []).some(finite) ? { x: m.step, y: m[key] } : null;
};

// Training loss (solid) and validation loss in eval mode (dashed).
export function lossTraces(ctx) {
  return ctx.entries.flatMap((entry) => [
    ...entryCurve(ctx, entry, metricSeries, { key: "train_loss", dash: "solid", legend: true }),
    ...entryCurve(ctx, entry, metricSeries, { key: "val_loss", dash: "dash", legend: false }),
  ]);
}

// Last gradient norm of each block's weight against depth (input side first).
export function gradDepthTraces(ctx) {
  return ctx.entries
    .map((entry) => {
      const perRun = entry.runs.map((run) => gradByDepth(ctx.data.get(run.id)));
      const names = [];
      for (const points of perRun)
        for (const p of points) if (!names.includes(p.name)) names.push(p.name);
      if (!names.length) return null;
      const columns = names.map((name) =>
        stats(perRun.map((pts) => pts.find((p) => p.name === name)?.value)),
      );
      const agg = {
        y: columns.map((c) => c.mean),
        lo: columns.map((c) => c.min),
        hi: columns.map((c) => c.max),
      };
      const trace = markers(
        line({
          x: names,
          y: agg.y,
          name: entry.label,
          color: ctx.colourOf(entry),
          group: entry.key,
          meta: { series: "grad_norm_by_depth", runs: entry.runs.map((r) => r.id) },
          points: names.length,
        }),
        "circle",
      );
      return withSpread(trace, agg, entry);
    })
    .filter(Boolean);
}

// Whether any run recorded the per-channel log-ratio quartiles over training.
export function hasDistributionSeries(ctx) {
  return [...ctx.data.values()].some((d) =>
    d.layers.some((l) => (l[SERIES.logMedian] ?? []).some(finite)),
  );
}

// Per-channel shift of one BN layer over training, every run overlaid: the median of the signed
// log(eval_var_c / running_var_c) (line) and its quartiles (band); 0 = no shift. The grey band
// is where the quartiles would lie from sampling noise alone: ±0.674·s, with s the spread of a
// channel's log-ratio that the probe's noise floor stands for. Without those series: the final
// per-channel shift max(r, 1/r) as histograms.
export function distributionTraces(ctx, layerName) {
  if (hasDistributionSeries(ctx)) {
    const traces = [];
    let floorDrawn = false;
    for (const entry of ctx.entries) {
      const color = ctx.colourOf(entry);
      entry.runs.forEach((run, k) => {
        const layer = ctx.data.get(run.id)?.layers.find((l) => l.name === layerName);
        if (!layer || !(layer[SERIES.logMedian] ?? []).some(finite)) return;
        const spread = (layer[SERIES.floor] ?? []).map((f) => unfold(f));
        if (!floorDrawn && spread.some(finite)) {
          floorDrawn = true;
          traces.push(
            ...band({
              x: layer.step,
              lo: spread.map((s) => (finite(s) ? -IQR_Z * s : null)),
              hi: spread.map((s) => (finite(s) ? IQR_Z * s : null)),
              name: "noise",
              color: "#7f8792",
              meta: { series: "floor", band: true },
            }),
          );
        }
        const name = entry.runs.length > 1 ? `${entry.label} · #${run.id}` : entry.label;
        traces.push(
          ...band({
            x: layer.step,
            lo: layer[SERIES.logQ1],
            hi: layer[SERIES.logQ3],
            name,
            color,
            group: entry.key,
            meta: { series: "logratio_iqr", runs: [run.id], band: true },
          }),
        );
        traces.push(
          line({
            x: layer.step,
            y: layer[SERIES.logMedian],
            name,
            color,
            group: entry.key,
            showlegend: k === 0,
            meta: { series: "logratio_median", runs: [run.id] },
            hoverLabel: `${name} · median log-ratio`,
          }),
        );
      });
    }
    return { kind: "series", traces };
  }
  const traces = ctx.entries
    .flatMap((entry) =>
      entry.runs.map((run) => {
        const values = run.summary?.[SUMMARY.perChannel]?.[layerName];
        if (!Array.isArray(values) || !values.length) return null;
        return {
          type: "histogram",
          x: values,
          name: plotText(`${entry.label}${entry.runs.length > 1 ? ` · #${run.id}` : ""}`),
          opacity: 0.55,
          marker: { color: ctx.colourOf(entry) },
          nbinsx: 40,
          legendgroup: entry.key,
          meta: { series: "shift_per_channel", runs: [run.id], layer: layerName },
        };
      }),
    )
    .filter(Boolean);
  return { kind: "histogram", traces };
}
