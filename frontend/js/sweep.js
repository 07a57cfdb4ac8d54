// The sweep view (/sweep?sweep=ID or /sweep?runs=1,2,...): a sweep as a whole. Parallel
// coordinates from the config fields that vary to the final metrics, and one metric against
// one parameter; brushing an axis (or box/lasso-selecting points) selects runs, which open in
// the compare view. The picked parameter and metric are URL parameters (&x=&metric=).

import * as api from "./api.js";
import { layout, purgeAll, render, runColour } from "./charts.js";
import { configValue, differingPaths } from "./diff.js";
import { el, notice } from "./dom.js";
import { shortValue } from "./fields.js";
import { compareUrl, navigate, param, parseIds, setParams } from "./state.js";

const LIMIT = 500; // the API's page cap: a sweep view of more is a parallel-coordinates smear

// Final metrics of a run, from its summary (what a sweep is judged by).
export const METRICS = {
  test_acc_eval: { label: "test acc (eval)", of: (r) => r.summary?.test_acc_eval },
  test_acc_recalibrated: { label: "test acc (recalibrated)", of: (r) => r.summary?.test_acc_recalibrated },
  recal_gain: { label: "recalibrated − eval", of: (r) => diff(r.summary?.test_acc_recalibrated, r.summary?.test_acc_eval) },
  max_shift: { label: "max variance shift", of: (r) => {
    const vs = Object.values(r.summary?.shift_by_layer ?? {}).filter(Number.isFinite);
    return vs.length ? Math.max(...vs) : null;
  } },
};

function diff(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) ? a - b : null;
}

// A parallel-coordinates dimension for a config path: numbers as they are, anything else as
// categories (ticks named by the value).
function dimension(runs, path) {
  const values = runs.map((r) => configValue(r, path) ?? null);
  if (values.every((v) => typeof v === "number" || v === null)) {
    return { label: path, values: values.map((v) => (v === null ? NaN : v)), path };
  }
  const cats = [...new Set(values.map((v) => JSON.stringify(v)))].sort();
  return { label: path, values: values.map((v) => cats.indexOf(JSON.stringify(v))), path,
    tickvals: cats.map((_, i) => i), ticktext: cats.map((c) => shortValue(JSON.parse(c))) };
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

export function renderSweep(root) {
  let alive = true;
  const sweepId = /^\d+$/.test(param("sweep", "")) ? Number(param("sweep")) : null;
  const ids = parseIds(param("runs"));
  const head = el("div", { class: "view-head" }, el("h1", { text: sweepId ? `Sweep ${sweepId}` : "Sweep view" }));
  const body = el("div", { class: "sweep-body" }, notice("loading…"));
  root.append(head, body);
  if (!sweepId && !ids.length) {
    body.replaceChildren(notice("Open a sweep (/sweep?sweep=ID, or the sweep link in the runs table) or select runs and press Sweep view.", "info"));
    return () => {};
  }

  (async () => {
    let runs;
    try {
      const query = sweepId ? { sweep: sweepId } : { ids: ids.join(",") };
      runs = (await api.listRuns({ ...query, sort: "id", limit: LIMIT })).data;
    } catch (exc) {
      body.replaceChildren(notice(`could not load runs: ${exc.message}`, "error"));
      return;
    }
    if (!alive) return;
    if (!runs.length) {
      body.replaceChildren(notice("No runs here.", "info"));
      return;
    }
    const paths = differingPaths(runs);
    const params = paths.length ? paths : ["train.seed"];
    let selection = runs.map((r) => r.id);

    const selected = el("div", { class: "sweep-selected", "aria-live": "polite" });
    const compareButton = el("button", { class: "primary", text: "Compare selected",
      onclick: () => navigate(compareUrl(selection)) });
    const showSelection = (idx, how) => {
      selection = idx.map((i) => runs[i].id);
      selected.dataset.ids = selection.join(",");
      selected.replaceChildren(`${selection.length} of ${runs.length} runs selected${how ? ` (${how})` : ""}: `,
        ...selection.slice(0, 30).map((id) => el("span", { class: "swatch-id" },
          el("span", { class: "swatch", style: { background: runColour(id) } }), `#${id} `)),
        selection.length > 30 ? `+${selection.length - 30}` : "");
      compareButton.disabled = !selection.length || selection.length > 100;
      compareButton.textContent = `Compare selected (${selection.length})`;
    };

    const xSel = el("select", { name: "x", "aria-label": "parameter" }, params.map((p) => el("option", { value: p, text: p })));
    xSel.value = params.includes(param("x")) ? param("x") : params[0];
    const mSel = el("select", { name: "metric", "aria-label": "metric" },
      Object.entries(METRICS).map(([k, m]) => el("option", { value: k, text: m.label })));
    mSel.value = METRICS[param("metric")] ? param("metric") : "test_acc_eval";
    const par = el("div", { class: "chart", id: "chart-parcoords", role: "img", "aria-label": "parallel coordinates" });
    const scatter = el("div", { class: "chart", id: "chart-scatter", role: "img", "aria-label": "metric against parameter" });
    body.replaceChildren(
      el("p", { class: "hint", text: `${runs.length} runs; ${paths.length} config field${paths.length === 1 ? "" : "s"} vary. Drag along an axis to brush; box- or lasso-select points in the scatter.` }),
      el("div", { class: "toolbar" }, compareButton, selected),
      el("div", { class: "chart-box" }, par),
      el("div", { class: "toolbar" }, el("label", { class: "inline" }, "metric ", mSel),
        el("label", { class: "inline" }, "against ", xSel)),
      el("div", { class: "chart-box" }, scatter));

    const dims = [...params.map((p) => dimension(runs, p)),
      ...Object.entries(METRICS).map(([k, m]) => ({ label: m.label, values: runs.map((r) => m.of(r) ?? NaN), metric: k }))]
      .filter((d) => d.values.some(Number.isFinite));
    const metricIndex = dims.findIndex((d) => d.metric === "test_acc_eval");
    await render(par, [{
      type: "parcoords",
      line: { color: metricIndex >= 0 ? dims[metricIndex].values.map((v) => (Number.isFinite(v) ? v : 0)) : runs.map((r) => r.id),
        colorscale: "Viridis", showscale: true },
      dimensions: dims.map((d) => ({ label: d.label, values: d.values, tickvals: d.tickvals, ticktext: d.ticktext })),
      meta: { runs: runs.map((r) => r.id) },
    }], layout({ title: "config fields → final metrics", height: 420, extra: { margin: { l: 70, r: 40, t: 70, b: 30 } } }),
    { filename: "bnlab-sweep-parcoords" });
    par.on("plotly_restyle", () => {
      const current = par.data[0].dimensions.map((d, k) => ({ values: dims[k].values, constraintrange: d.constraintrange }));
      showSelection(brushed(current, runs.length), "brushed");
    });

    const drawScatter = () => {
      const m = METRICS[mSel.value];
      const d = dimension(runs, xSel.value);
      setParams({ x: xSel.value, metric: mSel.value });
      return render(scatter, [{
        type: "scatter", mode: "markers", x: d.values, y: runs.map((r) => m.of(r) ?? null),
        text: runs.map((r) => `#${r.id} ${r.name}`), customdata: runs.map((r) => r.id),
        marker: { size: 10, color: runs.map((r) => runColour(r.id)) },
        hovertemplate: "%{text}<br>%{y:.4g}<extra></extra>", meta: { runs: runs.map((r) => r.id) },
      }], layout({ title: `${m.label} against ${xSel.value}`, xTitle: xSel.value, yTitle: m.label, height: 380,
        extra: { dragmode: "select", hovermode: "closest",
          ...(d.tickvals ? { xaxis: { title: { text: xSel.value }, tickvals: d.tickvals, ticktext: d.ticktext } } : {}) } }),
      { filename: "bnlab-sweep-scatter", select: true });
    };
    await drawScatter();
    scatter.on("plotly_selected", (ev) => {
      if (!ev || !ev.points) return;
      showSelection(ev.points.map((p) => p.pointIndex), "selected in the scatter");
    });
    mSel.addEventListener("change", drawScatter);
    xSel.addEventListener("change", drawScatter);
    showSelection(runs.map((_, i) => i), "");
    if (alive) document.body.dataset.ready = "sweep";
  })();

  return () => {
    alive = false;
    purgeAll(root);
    delete document.body.dataset.ready;
  };
}
