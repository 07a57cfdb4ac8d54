// Plotly wrappers. Every chart is drawn and redrawn through Plotly.react with a uirevision,
// so a user's zoom survives live updates; traces are built from fresh arrays each time.
// Traces switch to WebGL (scattergl) when they carry many points.

import { plotText } from "./dom.js";


// 20 distinguishable colours (Tableau 10 and its light partners, interleaved by contrast).
export const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#7f7f7f", "#bcbd22", "#393b79", "#ad494a", "#637939", "#e7969c", "#6b6ecf", "#8c6d31",
  "#ce6dbd", "#3182bd", "#fd8d3c", "#31a354",
];

export function colour(index) {
  return PALETTE[index % PALETTE.length];
}

// One colour per run wherever it is drawn, from its id (not its position in a URL or a table):
// a multiplicative hash spreads consecutive ids (a sweep's runs) over the palette.
export function runColour(id) {
  const h = Math.imul(Number(id) >>> 0, 2654435761) >>> 0;
  return PALETTE[(h >>> 16) % PALETTE.length];
}

// ---- Plotly, loaded only by the views that draw charts ---------------------------------------

let plotlyLoading = null;

// The runs table has no chart: Plotly (4.8 MB, 1.4 MB gzipped) is fetched on the first render.
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/vendor/plotly.min.js";
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        plotlyLoading = null;
        reject(new Error("could not load /vendor/plotly.min.js"));
      };
      document.head.append(script);
    });
  }
  return plotlyLoading;
}

// ---- theme ----------------------------------------------------------------------------------

const darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

export function isDark() {
  return Boolean(darkQuery?.matches);
}

// Chart colours for the browser's colour scheme (the page follows it through CSS).
function theme() {
  return isDark()
    ? { paper: "#161a20", plot: "#161a20", grid: "#2c333d", text: "#d7dde5", legend: "rgba(22,26,32,0.7)" }
    : { paper: "#ffffff", plot: "#ffffff", grid: "#eceff3", text: "#1f2328", legend: "rgba(255,255,255,0.7)" };
}

// Redraw every chart on the page when the browser switches between light and dark.
darkQuery?.addEventListener?.("change", () => {
  if (!window.Plotly) return;
  const t = theme();
  for (const div of document.querySelectorAll(".js-plotly-plot")) {
    window.Plotly.relayout(div, { paper_bgcolor: t.paper, plot_bgcolor: t.plot, "font.color": t.text,
      "xaxis.gridcolor": t.grid, "yaxis.gridcolor": t.grid, "legend.bgcolor": t.legend });
  }
});

export const DASH = { train_var: "solid", eval_var: "dash", running_var: "dot" };

// Above this many points in one figure, SVG gets sluggish; WebGL stays smooth.
export const GL_POINTS = 5000;

let glSupport = null;

// WebGL only where it is hardware-accelerated: a software rasteriser (SwiftShader, llvmpipe:
// headless or GPU-less browsers) draws many points far slower than SVG does. `?gl=1` / `?gl=0`
// in the URL force the choice (benchmarks/bench_dashboard.py measures both).
export function webglAvailable() {
  if (glSupport === null) {
    const forced = new URL(window.location.href).searchParams.get("gl");
    glSupport = forced === "1" ? true : forced === "0" ? false : hardwareWebgl();
  }
  return glSupport;
}

function hardwareWebgl() {
  try {
    const gl = document.createElement("canvas").getContext("webgl");
    if (!gl) return false;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const renderer = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
    gl.getExtension("WEBGL_lose_context")?.loseContext(); // give the context back at once
    return !/swiftshader|llvmpipe|software|basic render/i.test(renderer);
  } catch {
    return false;
  }
}

export function traceType(points) {
  return points > GL_POINTS && webglAvailable() ? "scattergl" : "scatter";
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

export function line({ x, y, name, color, dash = "solid", width = 1.6, group, showlegend = true,
  meta, hoverLabel, points }) {
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
    hovertemplate: `%{y:.4g}<extra>${plotText(hoverLabel ?? name)}</extra>`,
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

export function layout({ title, xTitle = "step", yTitle, logy = false, showlegend = false,
  height = 300, extra = {} }) {
  const t = theme();
  return {
    title: { text: plotText(title), font: { size: 13 }, x: 0.01, xanchor: "left" },
    height,
    margin: { l: 58, r: 12, t: 34, b: 40 },
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: t.text },
    paper_bgcolor: t.paper,
    plot_bgcolor: t.plot,
    showlegend,
    legend: { font: { size: 10 }, bgcolor: t.legend },
    hovermode: "x",
    xaxis: { title: { text: xTitle }, gridcolor: t.grid, zeroline: false },
    yaxis: { title: { text: yTitle }, gridcolor: t.grid, zeroline: false,
      type: logy ? "log" : "linear", exponentformat: "power" },
    ...extra,
  };
}

// Toolbar: PNG download, zoom and pan; no "edit in Chart Studio" / send-to-cloud button (the
// data would leave the lab) and no Plotly logo.
export function config(filename, { select = false } = {}) {
  return {
    responsive: true,
    displaylogo: false,
    showSendToCloud: false,
    showEditInChartStudio: false,
    showLink: false,
    modeBarButtonsToRemove: ["sendDataToCloud", "editInChartStudio", "autoScale2d",
      ...(select ? [] : ["select2d", "lasso2d"])],
    toImageButtonOptions: { format: "png", filename, scale: 2 },
  };
}

// A figure with many points in total draws all its lines with WebGL (one context per figure).
function preferGl(traces) {
  const lines = traces.filter((t) => t.type === "scatter" && t.mode === "lines");
  const points = lines.reduce((n, t) => n + (t.x?.length ?? 0), 0);
  if (points <= GL_POINTS || !webglAvailable()) return traces;
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
  if (t.fill || t.error_y || t.meta?.band || Array.isArray(t.marker?.color) || Array.isArray(t.text)) return null;
  return JSON.stringify([t.type, t.mode, t.line, t.marker, t.opacity ?? 1, t.xaxis, t.yaxis, t.connectgaps]);
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
  });
  return out.map((t) => {
    if (!t.names) return t;
    const { names, runs, ...trace } = t;
    if (names.length === 1) return { ...trace, customdata: undefined, name: names[0], showlegend: t.showlegend };
    return { ...trace, name: `${names.length} curves`, connectgaps: false,
      hovertemplate: "%{y:.4g}<extra>%{customdata}</extra>",
      meta: { ...trace.meta, runs: [...new Set(runs)], merged: names.length } };
  });
}

// uirevision keeps zoom/pan across redraws of the same view; a new key resets them.
export async function render(div, traces, chartLayout, { uirevision, filename = "bnlab-chart", select = false } = {}) {
  const plotly = await loadPlotly();
  return plotly.react(div, preferGl(mergeTraces(traces)), { ...chartLayout, uirevision: uirevision ?? "keep" },
    config(filename, { select }));
}

export function purgeAll(root) {
  if (!window.Plotly) return; // nothing was drawn yet
  for (const div of root.querySelectorAll(".js-plotly-plot")) window.Plotly.purge(div);
}
