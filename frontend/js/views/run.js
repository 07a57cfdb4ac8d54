// One run (/runs/ID): the verdict first (is its shift real, what to do), the run's facts and
// summary with every BN layer's final shift against its noise floor and prediction, then every
// curve it recorded, the story's charts and tables, the config; cancel / retry / delete /
// export / CSV.

import * as api from "../lib/api.js";
import { layout, purgeAll, render } from "../charts/plotly.js";
import { chartSpecs, hasValues, shiftHistogram } from "../charts/run.js";
import { colour } from "../data/colours.js";
import { runContext } from "../data/context.js";
import { metricsCsv, layersCsv } from "../data/csv.js";
import { fmt, pct, when } from "../data/format.js";
import { MAX_FLAT_LAYERS, MAX_LAYER_CHARTS, pickLayers } from "../data/groups.js";
import { describeKey, fromDescription, fromScriptSummary, layerLabel } from "../data/layers.js";
import { isTerminal, unplanned } from "../data/runs.js";
import { el, downloadBlob, notice, progressBar, setChildren, statusBadge } from "../lib/dom.js";
import { flagParam, navigate, param, runUrl, setParams } from "../lib/router.js";
import { watch } from "../lib/stream.js";
import { renderStory } from "./story.js";
import { shiftSummary } from "./run_shift.js";

const MAX_POINTS = 2000;
const REFRESH_MS = 1500;

async function downloadCsv(id) {
  // The full series, not the downsampled view.
  const [metrics, layers] = await Promise.all([api.getMetrics(id), api.getLayers(id)]);
  downloadBlob(
    new Blob([metricsCsv(metrics.columns)], { type: "text/csv" }),
    `bnlab-run-${id}-metrics.csv`,
  );
  downloadBlob(
    new Blob([layersCsv(layers.layers ?? [])], { type: "text/csv" }),
    `bnlab-run-${id}-layers.csv`,
  );
}

// ---- panels ------------------------------------------------------------------------------------

function progressFact(run) {
  if (unplanned(run))
    return `step ${run.step ?? 0} (length not given: bnlab.init(total_steps=...))`;
  if (isTerminal(run.status)) return pct(run.progress);
  return el("span", {}, progressBar(run.progress), ` ${pct(run.progress)} · step ${run.step ?? 0}`);
}

function facts(run) {
  const rows = [
    ["status", statusBadge(run.status)],
    // engine: trained by a bnlab worker from its config; script: a user's own loop (bnlab SDK)
    ["kind", run.kind === "script" ? "script (bnlab SDK in the user's training loop)" : "engine"],
    ["progress", progressFact(run)],
    ["attempt", String(run.attempt ?? 0)],
    ["device", run.device ?? "–"],
    ["host", run.host ?? "–"],
    ["created", when(run.created_at)],
    ["started", when(run.started_at)],
    ["finished", when(run.finished_at)],
    ["tags", (run.tags ?? []).join(", ") || "–"],
    ["sweep", run.sweep_id !== null && run.sweep_id !== undefined ? String(run.sweep_id) : "–"],
  ];
  return el(
    "dl",
    { class: "facts" },
    rows.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]),
  );
}

function summaryPanel(run) {
  const s = run.summary;
  if (!s)
    return notice(
      isTerminal(run.status) ? "No summary recorded." : "The summary appears when the run ends.",
    );
  const bySize = (obj) => Object.entries(obj ?? {}).sort(([a], [b]) => Number(a) - Number(b));
  const rows = [
    ["test accuracy, eval mode", pct(s.test_acc_eval)],
    ...bySize(s.test_acc_train_mode).map(([bs, v]) => [
      `test accuracy, model.train() @ batch ${bs}`,
      pct(v),
    ]),
    ...bySize(s.test_acc_train_bn).map(([bs, v]) => [
      `test accuracy, BN-only train mode @ batch ${bs}`,
      pct(v),
    ]),
    ["test accuracy, BN recalibrated", pct(s.test_acc_recalibrated)],
    ["steps / s", fmt(s.steps_per_s, 1)],
    ["wall time", s.wall_s !== null && s.wall_s !== undefined ? `${fmt(s.wall_s, 1)} s` : "–"],
    ["device", typeof s.device === "string" ? s.device : "–"],
  ];
  return el(
    "table",
    { class: "kv" },
    el(
      "tbody",
      {},
      rows.map(([k, v]) =>
        el("tr", {}, el("th", { text: k }), el("td", { class: "num", text: v })),
      ),
    ),
  );
}

function actionButton(label, fn, setMessage, { danger = false } = {}) {
  return el("button", {
    text: label,
    class: danger ? "danger" : null,
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await fn();
      } catch (exc) {
        setMessage(notice(`${label}: ${exc.message}`, "error"));
      } finally {
        event.target.disabled = false;
      }
    },
  });
}

function actions(run, reload, setMessage, exportFormats = []) {
  const act = (label, fn, opts) => actionButton(label, fn, setMessage, opts);
  const live = !isTerminal(run.status);
  return el(
    "div",
    { class: "actions" },
    live
      ? act("Cancel", async () => {
          await api.cancelRun(run.id);
          await reload();
        })
      : null,
    act("Retry", async () => {
      const created = await api.retryRun(run.id);
      navigate(runUrl(created.id));
    }),
    !live
      ? act(
          "Delete",
          async () => {
            if (!window.confirm(`Delete run #${run.id} and its data?`)) return;
            await api.deleteRun(run.id);
            navigate("/");
          },
          { danger: true },
        )
      : null,
    act("Series CSV", () => downloadCsv(run.id)),
    // Only the export files the server has (GET /exports); ONNX exists when the worker had onnx.
    exportFormats.includes("npz")
      ? act("Export .npz", async () =>
          downloadBlob(await api.exportRun(run.id, "npz"), `bnlab-run-${run.id}.npz`),
        )
      : null,
    exportFormats.includes("onnx")
      ? act("Export .onnx", async () =>
          downloadBlob(await api.exportRun(run.id, "onnx"), `bnlab-run-${run.id}.onnx`),
        )
      : null,
  );
}

// ---- deep nets: which layers get their own charts -----------------------------------------------

// Every layer of a net with at most MAX_LAYER_CHARTS layers; of a deeper one (ResNets, DenseNets:
// 50-300 BN layers) the stage or layer picked in the URL (?stage=, ?layer=), at most
// MAX_LAYER_CHARTS of them. The by-depth charts always show every layer.
export function selectLayers(run, layers) {
  const byIndex = new Map(layers.map((l) => [l.index, l]));
  const count = Math.max(
    layers.length ? Math.max(...layers.map((l) => l.index)) + 1 : 0,
    run.layer_names?.length ?? 0,
  );
  const names = Array.from(
    { length: count },
    (_, i) => byIndex.get(i)?.name ?? run.layer_names?.[i] ?? "",
  );
  const places = Array.isArray(run.layer_places) ? run.layer_places : null;
  const withVar = layers
    .filter((l) => ["train_var", "eval_var"].some((k) => hasValues(l[k])))
    .map((l) => l.index);
  const indices = withVar.length ? withVar : layers.map((l) => l.index);
  const pick = pickLayers(names, indices, places, {
    stage: param("stage", "all"),
    layer: param("layer", "all"),
    max: MAX_LAYER_CHARTS,
  });
  const deep = layers.length > MAX_LAYER_CHARTS;
  return {
    names,
    places,
    deep,
    lines: new Set(deep ? pick.shown : layers.map((l) => l.index)),
    ...pick,
  };
}

// The stage menu, then that stage's layers (never 300 names in one menu); null for small nets.
function layerControls(sel, info, onPick) {
  if (!sel.deep) return null;
  const many = sel.stages.length > 1;
  const stageSel = el(
    "select",
    { name: "stage", "aria-label": "stage" },
    el("option", { value: "all", text: many ? "all stages" : "all layers" }),
    many
      ? sel.stages.map((st) =>
          el("option", { value: st.stage, text: `${st.stage} (${st.indices.length})` }),
        )
      : [],
  );
  stageSel.value = sel.stage;
  const { pool } = sel;
  const layerSel = el(
    "select",
    { name: "layer", "aria-label": "layer" },
    el("option", {
      value: "all",
      text: `all ${pool.length} layers${pool.length > MAX_LAYER_CHARTS ? ` (first ${MAX_LAYER_CHARTS} drawn)` : ""}`,
    }),
    pool.length <= MAX_FLAT_LAYERS || sel.stage !== "all"
      ? pool.map((i) =>
          el("option", {
            value: String(i),
            text: `${i}: ${layerLabel(sel.names[i], info.get(sel.names[i]))}`,
          }),
        )
      : [],
  );
  layerSel.value = [...layerSel.options].some((o) => o.value === param("layer"))
    ? param("layer")
    : "all";
  const wrap = el("label", { class: "inline layer-pick" }, "layers ", stageSel, layerSel);
  wrap.addEventListener("change", (event) => {
    setParams({
      stage: stageSel.value === "all" ? null : stageSel.value,
      layer: event.target.name === "stage" || layerSel.value === "all" ? null : layerSel.value,
    });
    onPick();
  });
  return wrap;
}

// ---- charts ------------------------------------------------------------------------------------

function chartDiv(spec) {
  const note = spec.opts?.note ? el("div", { class: "chart-note", text: spec.opts.note }) : null;
  return el(
    "div",
    { class: "chart-box" },
    el("div", {
      class: "chart",
      id: spec.id,
      role: "img",
      "aria-label": spec.opts?.note ? `${spec.title} (${spec.opts.note})` : spec.title,
    }),
    note,
  );
}

function specLayout(spec) {
  const { title, yTitle, traces, opts = {} } = spec;
  const chartLayout = layout({
    title: opts.yrange ? `${title} (y fitted without the first probe)` : title,
    yTitle,
    xTitle: opts.xTitle,
    logy: Boolean(opts.logy),
    percent: Boolean(opts.percent),
    showlegend: traces.length > 1 && traces.length <= 12,
    extra: opts.yrange
      ? {
          yaxis: {
            title: { text: yTitle },
            type: opts.logy ? "log" : "linear",
            range: opts.yrange,
            exponentformat: "power",
          },
        }
      : {},
  });
  if (opts.xaxis) chartLayout.xaxis = { ...chartLayout.xaxis, ...opts.xaxis }; // stage ticks, themed grid
  return chartLayout;
}

function drawCharts(view, sel) {
  const { grid, last } = view;
  const { run, metrics, layers } = last;
  const logy = view.logy.checked;
  const rev = `run:${run.id}:${logy}`;
  const specs = chartSpecs(run, metrics, layers, logy, sel, view.info);
  const histogram = shiftHistogram(
    run,
    new Set(layers.filter((l) => sel.lines.has(l.index)).map((l) => l.name)),
  );
  const ids = [...specs.map((s) => s.id), ...(histogram ? ["chart-hist"] : [])].join(",");
  if (grid.dataset.charts !== ids) {
    // a new set of charts (first data, first BN probe, summary)
    purgeAll(grid);
    grid.replaceChildren(...specs.map(chartDiv));
    if (histogram) grid.append(chartDiv({ id: "chart-hist", title: "per-channel shift" }));
    grid.dataset.charts = ids;
  }
  const drawing = specs.map((spec) =>
    render(grid.querySelector(`#${spec.id}`), spec.traces, specLayout(spec), {
      uirevision: rev,
      filename: `bnlab-run${run.id}-${spec.id.slice(6)}`,
    }),
  );
  const histDiv = grid.querySelector("#chart-hist");
  if (histogram && histDiv) {
    drawing.push(
      render(
        histDiv,
        histogram,
        layout({
          title: "per-channel variance shift, last probe",
          xTitle: "shift",
          yTitle: "channels",
          showlegend: true,
          extra: { barmode: "overlay", hovermode: "closest" },
        }),
        { uirevision: rev, filename: `bnlab-run${run.id}-shift-histogram` },
      ),
    );
  }
  return Promise.all(drawing);
}

function redraw(view) {
  if (!view.last) return Promise.resolve();
  const sel = selectLayers(view.last.run, view.last.layers);
  const key = JSON.stringify([sel.names, sel.stage, sel.pool, sel.shown, sel.deep]);
  if (key !== view.pickKey) {
    view.pickKey = key;
    const picker = layerControls(sel, view.info, () => redraw(view));
    view.picker.replaceChildren(...(picker ? [picker] : []));
    view.layerNote.replaceChildren(
      ...(sel.deep && sel.pool.length > sel.shown.length && sel.shown.length > 1
        ? [
            notice(
              `${sel.pool.length} BN layers: the first ${sel.shown.length} have their own charts; pick a ` +
                "stage or a layer above. The by-depth charts show every layer.",
              "info",
            ),
          ]
        : []),
    );
  }
  return drawCharts(view, sel);
}

// ---- loading -------------------------------------------------------------------------------------

// Every BN layer's type and what feeds it: from the describe endpoint for an engine run, from
// the SDK's summary for a script run.
async function layerInfo(run) {
  const key = describeKey(run);
  if (!key) return fromScriptSummary(run.summary);
  return fromDescription(await api.describeOnce(key, run.config));
}

async function fetchRun(id) {
  const [run, metrics, layers] = await Promise.all([
    api.getRun(id),
    api.getMetrics(id, { maxPoints: MAX_POINTS }),
    api.getLayers(id, { maxPoints: MAX_POINTS }),
  ]);
  const [exportFormats, info] = await Promise.all([
    run.status === "succeeded"
      ? api
          .listExports(run.id)
          .then((e) => e.formats)
          .catch(() => [])
      : [],
    layerInfo(run).catch(() => new Map()),
  ]);
  return { run, metrics: metrics.columns, layers: layers.layers ?? [], exportFormats, info };
}

function showRun(view, got) {
  const { run } = got;
  const setMessage = (n) => view.message.replaceChildren(n);
  view.head.replaceChildren(
    el(
      "h1",
      {},
      el("span", { class: "run-id", text: `#${run.id} ` }),
      el("span", { class: "run-name", text: run.name }),
    ),
    actions(run, () => load(view), setMessage, got.exportFormats),
  );
  view.top.replaceChildren(
    el(
      "section",
      { class: "panel" },
      el("h2", { text: "Run" }),
      facts(run),
      // A user's cancel is a status, not an error; only real failures show the error text.
      run.status === "cancelled"
        ? notice(run.cancel_requested ? "Cancelled by a user." : "Cancelled.", "info")
        : run.error
          ? el("pre", { class: "error-text", text: run.error })
          : null,
    ),
    el("section", { class: "panel" }, el("h2", { text: "Summary" }), summaryPanel(run)),
  );
  const shifts = shiftSummary(
    { run, metrics: got.metrics, layers: got.layers },
    got.info,
    MAX_FLAT_LAYERS,
  );
  setChildren(
    view.shifts,
    shifts
      ? el(
          "section",
          { class: "panel run-shifts" },
          el("h2", { text: "Final shift per BN layer" }),
          shifts,
        )
      : null,
  );
  view.config.textContent = JSON.stringify(run.config, null, 2);
}

function follow(view, run) {
  if (isTerminal(run.status)) {
    view.stopStream();
    view.stopStream = () => {};
  } else if (!view.stopStream.live) {
    view.stopStream = watch([run.id], () => {
      if (!view.timer && view.alive) view.timer = setTimeout(() => load(view), REFRESH_MS);
    });
    view.stopStream.live = true;
  }
}

async function load(view) {
  view.timer = null;
  let got;
  try {
    got = await fetchRun(view.id);
  } catch (exc) {
    if (view.alive)
      view.message.replaceChildren(
        notice(`could not load run #${view.id}: ${exc.message}`, "error"),
      );
    return;
  }
  if (!view.alive) return;
  view.info = got.info;
  showRun(view, got);
  view.last = { run: got.run, metrics: got.metrics, layers: got.layers };
  await redraw(view);
  if (!view.alive) return;
  await renderStory(
    view.story,
    runContext(got.run, got.metrics, got.layers, { colour: colour(0), layerInfo: got.info }),
  );
  if (!view.alive) return;
  document.body.dataset.ready = "run";
  follow(view, got.run);
}

// ---- the view ----------------------------------------------------------------------------------

function createView(root, id) {
  const view = {
    id,
    alive: true,
    timer: null,
    last: null,
    pickKey: null,
    info: new Map(),
    stopStream: () => {},
    head: el("div", { class: "view-head" }),
    message: el("div", { class: "message" }),
    top: el("div", { class: "run-top" }),
    shifts: el("div", { class: "run-shift-slot" }),
    grid: el("div", { class: "chart-grid" }),
    config: el("pre", { class: "config" }),
    picker: el("span", { class: "layer-picker" }),
    layerNote: el("div", { class: "layer-note" }),
    story: {
      top: el("div", { class: "story story-top" }),
      charts: el("div", { class: "story story-charts-slot" }),
      tables: el("div", { class: "story story-tables" }),
    },
    logy: el("input", { type: "checkbox", name: "logy", checked: flagParam("logy") }),
  };
  view.logy.addEventListener("change", () => {
    setParams({ logy: view.logy.checked });
    redraw(view);
  });
  const bar = el(
    "div",
    { class: "toolbar run-controls" },
    el(
      "label",
      { class: "inline", title: "log scale for loss, variance, shift and gradient-norm charts" },
      view.logy,
      " log y",
    ),
    view.picker,
  );
  root.append(
    view.head,
    view.message,
    view.story.top,
    view.top,
    view.shifts,
    bar,
    view.layerNote,
    view.grid,
    view.story.charts,
    view.story.tables,
    el("section", { class: "panel" }, el("h2", { text: "Config" }), view.config),
  );
  return view;
}

export function renderRun(root, id) {
  const view = createView(root, id);
  load(view);
  return () => {
    view.alive = false;
    view.stopStream();
    clearTimeout(view.timer);
    delete document.body.dataset.ready;
  };
}
