// Plotly itself: loaded only by the views that draw charts, themed for the browser's colour
// scheme, and every chart drawn and redrawn through Plotly.react with a uirevision, so a
// user's zoom survives live updates.

import { plotText } from "../data/format.js";
import { mergeTraces, preferGl, useWebgl } from "./traces.js";

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
    ? {
        paper: "#161a20",
        plot: "#161a20",
        grid: "#2c333d",
        text: "#d7dde5",
        legend: "rgba(22,26,32,0.7)",
      }
    : {
        paper: "#ffffff",
        plot: "#ffffff",
        grid: "#eceff3",
        text: "#1f2328",
        legend: "rgba(255,255,255,0.7)",
      };
}

// Redraw every chart on the page when the browser switches between light and dark.
darkQuery?.addEventListener?.("change", () => {
  if (!window.Plotly) return;
  const t = theme();
  for (const div of document.querySelectorAll(".js-plotly-plot")) {
    window.Plotly.relayout(div, {
      paper_bgcolor: t.paper,
      plot_bgcolor: t.plot,
      "font.color": t.text,
      "xaxis.gridcolor": t.grid,
      "yaxis.gridcolor": t.grid,
      "legend.bgcolor": t.legend,
    });
  }
});

// ---- WebGL ----------------------------------------------------------------------------------

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

useWebgl(webglAvailable);

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

// ---- layout, config, drawing ---------------------------------------------------------------

// Accuracies (fractions 0..1) read as percentages on every chart, like every table shows them.
const PERCENT_AXIS = { tickformat: ".0%", hoverformat: ".1%" };

export function layout({
  title,
  xTitle = "step",
  yTitle,
  logy = false,
  showlegend = false,
  height = 300,
  percent = false,
  extra = {},
}) {
  const t = theme();
  return {
    title: { text: plotText(title), font: { size: 13 }, x: 0.01, xanchor: "left" },
    height,
    margin: { l: 58, r: 12, t: 34, b: 40 },
    font: {
      family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
      size: 11,
      color: t.text,
    },
    paper_bgcolor: t.paper,
    plot_bgcolor: t.plot,
    showlegend,
    legend: { font: { size: 10 }, bgcolor: t.legend },
    hovermode: "x",
    xaxis: { title: { text: xTitle }, gridcolor: t.grid, zeroline: false },
    yaxis: {
      title: { text: yTitle },
      gridcolor: t.grid,
      zeroline: false,
      type: logy ? "log" : "linear",
      exponentformat: "power",
      ...(percent ? PERCENT_AXIS : {}),
    },
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
    modeBarButtonsToRemove: [
      "sendDataToCloud",
      "editInChartStudio",
      "autoScale2d",
      ...(select ? [] : ["select2d", "lasso2d"]),
    ],
    toImageButtonOptions: { format: "png", filename, scale: 2 },
  };
}

// uirevision keeps zoom/pan across redraws of the same view; a new key resets them.
export async function render(
  div,
  traces,
  chartLayout,
  { uirevision, filename = "bnlab-chart", select = false } = {},
) {
  const plotly = await loadPlotly();
  return plotly.react(
    div,
    preferGl(mergeTraces(traces), webglAvailable()),
    { ...chartLayout, uirevision: uirevision ?? "keep" },
    config(filename, { select }),
  );
}

export function purgeAll(root) {
  if (!window.Plotly) return; // nothing was drawn yet
  for (const div of root.querySelectorAll(".js-plotly-plot")) window.Plotly.purge(div);
}
