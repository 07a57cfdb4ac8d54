// The compare view's controls, all kept in the URL: which layers (a deep net's stage first),
// log y, running_var, grouping with its band, the x-axis, shared zoom and smoothing.

import { MAX_FLAT_LAYERS, MAX_LAYER_CHARTS, stagesOf } from "../data/groups.js";
import { infoOf, layerLabel } from "../data/layers.js";
import { el } from "../lib/dom.js";
import { flagParam, param, setParams } from "../lib/router.js";

/** The view's options as the URL holds them. */
export function options() {
  return {
    layer: param("layer", "all"),
    logy: flagParam("logy"),
    smoothing: Math.min(0.99, Math.max(0, Number(param("smooth", "0")) || 0)),
    running: flagParam("running"),
    groupBy: param("group") === "1" ? "seed" : param("group", "").replace(/^config\./, ""),
    band: param("band") === "sd" ? "sd" : "minmax",
    x: ["epoch", "wall"].includes(param("x")) ? param("x") : "step",
    shared: param("zoom") !== "0",
    hidden: new Set(
      (param("hide", "") || "")
        .split(",")
        .map(Number)
        .filter((n) => Number.isInteger(n) && n > 0),
    ),
  };
}

// Deep nets: a stage menu, then the layers of that stage only (never 300 names in one menu).
// Each layer is named with its type and what feeds it ("2: blocks.2.bn · BatchNorm1d after Dropout").
function layerPickers({ names, bnIndices, places, infos }, opts) {
  const stages = stagesOf(names, bnIndices, places);
  const stageSel = el(
    "select",
    { name: "stage", "aria-label": "stage" },
    el("option", { value: "all", text: stages.length > 1 ? "all stages" : "all BN layers" }),
    stages.length > 1
      ? stages.map((st) =>
          el("option", { value: st.stage, text: `${st.stage} (${st.indices.length})` }),
        )
      : [],
  );
  const currentStage = param("stage", "all");
  stageSel.value = stages.some((st) => st.stage === currentStage) ? currentStage : "all";
  const inStage =
    stageSel.value === "all" ? bnIndices : stages.find((st) => st.stage === stageSel.value).indices;
  const many = inStage.length > MAX_LAYER_CHARTS ? ` (first ${MAX_LAYER_CHARTS} drawn)` : "";
  const layer = el(
    "select",
    { name: "layer", "aria-label": "layer" },
    el("option", { value: "all", text: `all ${inStage.length} layers${many}` }),
    inStage.length <= MAX_FLAT_LAYERS || stageSel.value !== "all"
      ? inStage.map((i) =>
          el("option", {
            value: String(i),
            text: `${i}: ${layerLabel(names[i], infoOf(infos, names[i]))}`,
          }),
        )
      : [],
  );
  layer.value = inStage.includes(Number(opts.layer)) ? opts.layer : "all";
  return { stageSel, layer };
}

function groupPickers(groupPaths, opts) {
  const group = el(
    "select",
    { name: "group", "aria-label": "group by" },
    el("option", { value: "", text: "no grouping" }),
    el("option", { value: "seed", text: "seeds (runs differing only in train.seed)" }),
    groupPaths.map((p) => el("option", { value: p, text: p })),
  );
  group.value = [...group.options].some((o) => o.value === opts.groupBy) ? opts.groupBy : "";
  const bandSel = el(
    "select",
    { name: "band", "aria-label": "band" },
    el("option", { value: "minmax", text: "band: min/max" }),
    el("option", { value: "sd", text: "band: ± sd" }),
  );
  bandSel.value = opts.band;
  return { group, bandSel };
}

const check = (name, label, on) =>
  el(
    "label",
    { class: "inline" },
    el("input", { type: "checkbox", name, checked: on }),
    ` ${label}`,
  );

/**
 * The controls bar. `layers`: {names, bnIndices, places, infos}; `redraw(rebuild)` is called
 * after the URL changed (rebuild: the charts themselves change, not only their traces).
 */
export function controls(layers, groupPaths, redraw) {
  const opts = options();
  const { stageSel, layer } = layerPickers(layers, opts);
  const { group, bandSel } = groupPickers(groupPaths, opts);
  const smoothing = el("input", {
    type: "range",
    name: "smooth",
    min: "0",
    max: "0.99",
    step: "0.01",
    value: String(opts.smoothing),
    "aria-label": "smoothing",
  });
  const smoothValue = el("span", { class: "smooth-value", text: opts.smoothing.toFixed(2) });
  const xSel = el(
    "select",
    { name: "x", "aria-label": "x-axis" },
    ["step", "epoch", "wall"].map((x) =>
      el("option", { value: x, text: `x: ${x === "wall" ? "wall time" : x}` }),
    ),
  );
  xSel.value = opts.x;
  const bar = el(
    "div",
    { class: "toolbar compare-controls" },
    el("label", { class: "inline" }, "layers ", stageSel, layer),
    check("logy", "log y", opts.logy),
    check("running", "running_var", opts.running),
    el("label", { class: "inline" }, "group ", group, bandSel),
    xSel,
    check("zoom", "shared zoom", opts.shared),
    el("label", { class: "inline" }, "smoothing ", smoothing, smoothValue),
  );
  bar.addEventListener("input", (event) => {
    const t = event.target;
    if (t.name === "smooth") smoothValue.textContent = Number(t.value).toFixed(2);
    const on = (name) => bar.querySelector(`[name="${name}"]`).checked;
    setParams({
      stage: stageSel.value === "all" ? null : stageSel.value,
      layer: t.name === "stage" || layer.value === "all" ? null : layer.value,
      logy: on("logy"),
      running: on("running"),
      group: group.value || null,
      band: bandSel.value === "sd" ? "sd" : null,
      x: xSel.value === "step" ? null : xSel.value,
      zoom: on("zoom") ? null : "0",
      smooth: Number(smoothing.value) > 0 ? smoothing.value : null,
    });
    redraw(["group", "layer", "stage", "x"].includes(t.name));
  });
  return bar;
}
