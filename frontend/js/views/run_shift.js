// The run page's final shift per BN layer: its noise floor, the prediction and the verdict in
// words beside every value; a deep net's layers in one collapsed table per stage.

import { fixed } from "../data/format.js";
import { layerLabel, layerTitle } from "../data/layers.js";
import { finite, layerStages, shiftRows } from "../data/story.js";
import { shiftVerdict } from "../data/verdict.js";
import { el } from "../lib/dom.js";
import { verdictCell } from "./verdict.js";

const HEAD = ["BN layer", "final shift (bnlab per-channel)", "noise floor", "predicted", "verdict"];

function row(r, info) {
  const label = layerLabel(r.name, info.get(r.name));
  return el(
    "tr",
    { dataset: { layer: r.name, level: r.verdict.level } },
    el(
      "td",
      { class: "layer-name", title: layerTitle(r.name, info.get(r.name)) },
      el("span", { text: r.name }),
      label !== r.name
        ? el("span", { class: "layer-kind", text: label.slice(r.name.length).replace(/^ · /, "") })
        : null,
    ),
    el("td", { class: "num", dataset: { col: "final-shift" }, text: fixed(r.shift) }),
    el("td", { class: "num", dataset: { col: "floor" }, text: fixed(r.floor) }),
    el("td", { class: "num", dataset: { col: "predicted" }, text: fixed(r.predicted) }),
    verdictCell(r.verdict),
  );
}

function table(rows, info) {
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      { class: "kv shift-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          HEAD.map((h) => el("th", { text: h })),
        ),
      ),
      el(
        "tbody",
        {},
        rows.map((r) => row(r, info)),
      ),
    ),
  );
}

/** Every BN layer's final shift of one run with its floor, prediction and verdict. */
export function shiftSummary(data, info, maxFlat) {
  const rows = shiftRows(data)
    .filter((r) => finite(r.shift))
    .map((r) => ({ ...r, verdict: shiftVerdict(r) }));
  if (!rows.length) return null;
  if (rows.length <= maxFlat) return table(rows, info);
  const names = rows.map((r) => r.name);
  return el(
    "div",
    { class: "shift-stages" },
    layerStages([data.run], names).map((st) => {
      const mine = rows.filter((r) => st.names.includes(r.name));
      const values = mine.map((r) => r.shift);
      const range = values.length
        ? `, shift ${fixed(Math.min(...values))}–${fixed(Math.max(...values))}`
        : "";
      return el(
        "details",
        { class: "stage-shifts", dataset: { stage: st.stage } },
        el("summary", { text: `${st.stage}: ${st.names.length} BN layers${range}` }),
        table(mine, info),
      );
    }),
  );
}
