// The sweep view (/sweep?sweep=ID or /sweep?runs=1,2,...): a sweep as a whole. Parallel
// coordinates from the config fields that vary to the final metrics, and one metric against
// one parameter; brushing an axis (or box/lasso-selecting points) selects runs, which open in
// the compare view. The picked parameter and metric are URL parameters (&x=&metric=).

import * as api from "../lib/api.js";
import { layout, purgeAll, render } from "../charts/plotly.js";
import { runColour } from "../data/colours.js";
import { differingPaths } from "../data/configs.js";
import { METRICS, brushed, dimension } from "../data/sweep.js";
import { el, notice, swatch } from "../lib/dom.js";
import { compareUrl, navigate, param, parseIds, setParams } from "../lib/router.js";

const LIMIT = 500; // the API's page cap: a sweep view of more is a parallel-coordinates smear
// How each metric's values read on its axis and in its hover (like the tables: percentages).
const AXIS_FORMAT = {
  accuracy: { tickformat: ".0%", hover: ".1%" },
  points: { tickformat: "+.1%", hover: "+.1%" },
  number: { tickformat: "", hover: ".4g" },
};

// The selection line and the Compare button: which runs brushing or the scatter picked.
function selectionBar(runs) {
  const selected = el("div", { class: "sweep-selected", "aria-live": "polite" });
  let selection = runs.map((r) => r.id);
  const compareButton = el("button", {
    class: "primary",
    text: "Compare selected",
    onclick: () => navigate(compareUrl(selection)),
  });
  const show = (idx, how) => {
    selection = idx.map((i) => runs[i].id);
    selected.dataset.ids = selection.join(",");
    selected.replaceChildren(
      `${selection.length} of ${runs.length} runs selected${how ? ` (${how})` : ""}: `,
      ...selection
        .slice(0, 30)
        .map((id) => el("span", { class: "swatch-id" }, swatch(runColour(id)), `#${id} `)),
      selection.length > 30 ? `+${selection.length - 30}` : "",
    );
    compareButton.disabled = !selection.length || selection.length > 100;
    compareButton.textContent = `Compare selected (${selection.length})`;
  };
  return { element: el("div", { class: "toolbar" }, compareButton, selected), show };
}

async function drawParcoords(div, runs, params, onBrush) {
  const dims = [
    ...params.map((p) => dimension(runs, p)),
    ...Object.entries(METRICS).map(([k, m]) => ({
      label: m.label,
      values: runs.map((r) => m.of(r) ?? NaN),
      metric: k,
    })),
  ].filter((d) => d.values.some(Number.isFinite));
  const metricIndex = dims.findIndex((d) => d.metric === "test_acc_eval");
  await render(
    div,
    [
      {
        type: "parcoords",
        line: {
          color:
            metricIndex >= 0
              ? dims[metricIndex].values.map((v) => (Number.isFinite(v) ? v : 0))
              : runs.map((r) => r.id),
          colorscale: "Viridis",
          showscale: true,
        },
        dimensions: dims.map((d) => ({
          label: d.label,
          values: d.values,
          tickvals: d.tickvals,
          ticktext: d.ticktext,
          tickformat: METRICS[d.metric]
            ? AXIS_FORMAT[METRICS[d.metric].format].tickformat
            : undefined,
        })),
        meta: { runs: runs.map((r) => r.id) },
      },
    ],
    layout({
      title: "config fields → final metrics",
      height: 420,
      extra: { margin: { l: 70, r: 40, t: 70, b: 30 } },
    }),
    { filename: "bnlab-sweep-parcoords" },
  );
  div.on("plotly_restyle", () => {
    const current = div.data[0].dimensions.map((d, k) => ({
      values: dims[k].values,
      constraintrange: d.constraintrange,
    }));
    onBrush(brushed(current, runs.length));
  });
}

function drawScatter(div, runs, metricKey, path) {
  const m = METRICS[metricKey];
  const format = AXIS_FORMAT[m.format];
  const d = dimension(runs, path);
  setParams({ x: path, metric: metricKey });
  const chartLayout = layout({
    title: `${m.label} against ${path}`,
    xTitle: path,
    yTitle: m.label,
    height: 380,
    extra: {
      dragmode: "select",
      hovermode: "closest",
      ...(d.tickvals
        ? { xaxis: { title: { text: path }, tickvals: d.tickvals, ticktext: d.ticktext } }
        : {}),
    },
  });
  chartLayout.yaxis = { ...chartLayout.yaxis, tickformat: format.tickformat }; // percentages for accuracies
  return render(
    div,
    [
      {
        type: "scatter",
        mode: "markers",
        x: d.values,
        y: runs.map((r) => m.of(r) ?? null),
        text: runs.map((r) => `#${r.id} ${r.name}`),
        customdata: runs.map((r) => r.id),
        marker: { size: 10, color: runs.map((r) => runColour(r.id)) },
        hovertemplate: `%{text}<br>%{y:${format.hover}}<extra></extra>`,
        meta: { runs: runs.map((r) => r.id) },
      },
    ],
    chartLayout,
    { filename: "bnlab-sweep-scatter", select: true },
  );
}

async function loadSweepRuns(sweepId, ids) {
  const query = sweepId ? { sweep: sweepId } : { ids: ids.join(",") };
  return (await api.listRuns({ ...query, sort: "id", limit: LIMIT })).data;
}

async function showSweep(body, runs, alive) {
  const paths = differingPaths(runs);
  const params = paths.length ? paths : ["train.seed"];
  const selection = selectionBar(runs);
  const xSel = el(
    "select",
    { name: "x", "aria-label": "parameter" },
    params.map((p) => el("option", { value: p, text: p })),
  );
  xSel.value = params.includes(param("x")) ? param("x") : params[0];
  const mSel = el(
    "select",
    { name: "metric", "aria-label": "metric" },
    Object.entries(METRICS).map(([k, m]) => el("option", { value: k, text: m.label })),
  );
  mSel.value = METRICS[param("metric")] ? param("metric") : "test_acc_eval";
  const par = el("div", {
    class: "chart",
    id: "chart-parcoords",
    role: "img",
    "aria-label": "parallel coordinates",
  });
  const scatter = el("div", {
    class: "chart",
    id: "chart-scatter",
    role: "img",
    "aria-label": "metric against parameter",
  });
  body.replaceChildren(
    el("p", {
      class: "hint",
      text: `${runs.length} runs; ${paths.length} config field${paths.length === 1 ? "" : "s"} vary. Drag along an axis to brush; box- or lasso-select points in the scatter.`,
    }),
    selection.element,
    el("div", { class: "chart-box" }, par),
    el(
      "div",
      { class: "toolbar" },
      el("label", { class: "inline" }, "metric ", mSel),
      el("label", { class: "inline" }, "against ", xSel),
    ),
    el("div", { class: "chart-box" }, scatter),
  );
  await drawParcoords(par, runs, params, (idx) => selection.show(idx, "brushed"));
  const redraw = () => drawScatter(scatter, runs, mSel.value, xSel.value);
  await redraw();
  scatter.on("plotly_selected", (ev) => {
    if (ev && ev.points)
      selection.show(
        ev.points.map((p) => p.pointIndex),
        "selected in the scatter",
      );
  });
  mSel.addEventListener("change", redraw);
  xSel.addEventListener("change", redraw);
  selection.show(
    runs.map((_, i) => i),
    "",
  );
  if (alive()) document.body.dataset.ready = "sweep";
}

export function renderSweep(root) {
  let alive = true;
  const sweepId = /^\d+$/.test(param("sweep", "")) ? Number(param("sweep")) : null;
  const ids = parseIds(param("runs"));
  const head = el(
    "div",
    { class: "view-head" },
    el("h1", { text: sweepId ? `Sweep ${sweepId}` : "Sweep view" }),
  );
  const body = el("div", { class: "sweep-body" }, notice("loading…"));
  root.append(head, body);
  if (!sweepId && !ids.length) {
    body.replaceChildren(
      notice(
        "Open a sweep (/sweep?sweep=ID, or the sweep link in the runs table) or select runs and press Sweep view.",
        "info",
      ),
    );
    return () => {};
  }
  loadSweepRuns(sweepId, ids)
    .then((runs) => {
      if (!alive) return null;
      if (!runs.length) return body.replaceChildren(notice("No runs here.", "info"));
      return showSweep(body, runs, () => alive);
    })
    .catch((exc) => body.replaceChildren(notice(`could not load runs: ${exc.message}`, "error")));
  return () => {
    alive = false;
    purgeAll(root);
    delete document.body.dataset.ready;
  };
}
