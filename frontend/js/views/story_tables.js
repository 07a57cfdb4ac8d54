// The story's tables: accuracies with their gaps per entry, and per BN layer the measured
// shift with its noise floor, the prediction and the verdict. Long tables (many runs, deep
// nets) start collapsed and searchable; a small comparison shows them open.

import { fixed, pct, points, sdPoints } from "../data/format.js";
import { MAX_FLAT_LAYERS, TABLES_OPEN_UP_TO } from "../data/groups.js";
import { infoOf, layerLabel, layerTitle } from "../data/layers.js";
import { accuracies, finite, layerStages, shiftRows, stats } from "../data/story.js";
import { shiftVerdict } from "../data/verdict.js";
import { el, fold, notice, swatch } from "../lib/dom.js";
import { verdictCell } from "./verdict.js";

export function tablesOpen(ctx) {
  return ctx.entries.length <= TABLES_OPEN_UP_TO;
}

// "54.5% ± 1.2 pt" for a group (hover: n, min, max), "54.5%" for one run.
function statCell(values, format, col, { sdFormat } = {}) {
  const s = stats(values);
  const text =
    s.n === 0
      ? "–"
      : s.n === 1
        ? format(s.mean)
        : `${format(s.mean)} ± ${(sdFormat ?? format)(s.sd)}`;
  return el("td", {
    class: "num",
    dataset: { col, n: String(s.n) },
    title: s.n > 1 ? `n=${s.n}, min ${format(s.min)}, max ${format(s.max)}` : null,
    text,
  });
}

function entryCell(ctx, entry) {
  return el("td", { class: "story-entry" }, swatch(ctx.colourOf(entry)), entry.label);
}

function sizeMenu(sizes, bs, onSize) {
  if (sizes.length < 2) return null;
  return el(
    "label",
    { class: "inline story-control" },
    "train-mode test batch size ",
    el(
      "select",
      {
        name: "story-bs",
        "aria-label": "test batch size",
        onchange: (e) => onSize(e.target.value),
      },
      sizes.map((s) => el("option", { value: s, text: s, selected: s === bs })),
    ),
  );
}

function accuracyRows(ctx, bs, hasBn) {
  return ctx.entries.map((entry) => {
    const acc = entry.runs.map((run) => accuracies(run, bs));
    const col = (key) => acc.map((a) => a[key]);
    return el(
      "tr",
      { dataset: { entry: entry.key } },
      entryCell(ctx, entry),
      el("td", { class: "num", dataset: { col: "n" }, text: String(entry.runs.length) }),
      statCell(col("eval"), pct, "eval", { sdFormat: sdPoints }),
      statCell(col("trainMode"), pct, "train-mode", { sdFormat: sdPoints }),
      hasBn ? statCell(col("trainBn"), pct, "train-bn", { sdFormat: sdPoints }) : null,
      statCell(col("recal"), pct, "recalibrated", { sdFormat: sdPoints }),
      statCell(col("recalGap"), points, "gap-recal-eval", { sdFormat: sdPoints }),
      statCell(col("trainGap"), points, "gap-eval-train", { sdFormat: sdPoints }),
    );
  });
}

/** Eval, train-mode and recalibrated accuracy per entry, with the two gaps. */
export function accuracyTable(ctx, { bs, sizes, onSize, open }) {
  const hasBn = ctx.runs.some((r) => Object.keys(r.summary?.test_acc_train_bn ?? {}).length);
  const head = [
    "runs",
    "n",
    "eval",
    `train mode @${bs}`,
    ...(hasBn ? [`BN-only train @${bs}`] : []),
    "recalibrated",
    "recalibrated − eval",
    `eval − train mode @${bs}`,
  ];
  const tbody = el("tbody", {}, accuracyRows(ctx, bs, hasBn));
  return fold(
    {
      title: "Accuracy: eval, train mode, recalibrated — and the gaps",
      count: ctx.entries.length,
      open,
      cls: "story-panel story-accuracy-fold",
      search:
        ctx.entries.length > TABLES_OPEN_UP_TO
          ? { placeholder: "search runs", rows: () => tbody.children }
          : null,
    },
    sizeMenu(sizes, bs, onSize),
    bs === null ? el("p", { class: "hint", text: "No train-mode accuracy recorded." }) : null,
    el(
      "div",
      { class: "table-scroll" },
      el(
        "table",
        { class: "story-table story-accuracy" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            head.map((h) => el("th", { text: h })),
          ),
        ),
        tbody,
      ),
    ),
    el("p", {
      class: "hint",
      text:
        "Grouped runs: mean ± sample standard deviation, n runs; hover a cell " +
        "for min and max. A train-mode accuracy has no value (–) where BN cannot run in train mode " +
        "(one sample per channel at test batch size 1).",
    }),
  );
}

function layerCell(ctx, entry, name) {
  const info =
    ctx.layerInfo?.get(entry.runs[0].id)?.get(name) ?? infoOf(ctx.layerInfo ?? new Map(), name);
  const label = layerLabel(name, info);
  return el(
    "td",
    { class: "layer-name", title: layerTitle(name, info) },
    el("span", { text: name }),
    label !== name
      ? el("span", { class: "layer-kind", text: label.slice(name.length).replace(/^ · /, "") })
      : null,
  );
}

function shiftRowsOf(ctx, names) {
  const rows = [];
  for (const entry of ctx.entries) {
    const perRun = entry.runs.map((run) => shiftRows(ctx.data.get(run.id)));
    for (const name of names) {
      const cells = perRun.map((r) => r.find((c) => c.name === name)).filter(Boolean);
      if (!cells.length) continue;
      const pick = (key) => cells.map((c) => c[key]);
      const ratio = cells.map((c) =>
        finite(c.shift) && finite(c.predicted) ? c.shift / c.predicted : null,
      );
      const mean = (key) => stats(pick(key)).mean;
      const verdict = shiftVerdict({
        shift: mean("shift"),
        floor: mean("floor"),
        predicted: mean("predicted"),
      });
      rows.push(
        el(
          "tr",
          { dataset: { entry: entry.key, layer: name, level: verdict.level } },
          el("td", { class: "story-entry" }, swatch(ctx.colourOf(entry)), entry.label),
          layerCell(ctx, entry, name),
          statCell(pick("shift"), fixed, "measured"),
          statCell(pick("floor"), fixed, "floor"),
          statCell(pick("predicted"), fixed, "predicted"),
          statCell(ratio, fixed, "ratio"),
          verdictCell(verdict),
          statCell(pick("shiftLi"), fixed, "measured-li"),
          statCell(pick("liFloor"), fixed, "floor-li"),
        ),
      );
    }
  }
  return rows;
}

const SHIFT_HEAD = [
  "runs",
  "BN layer",
  "shift (bnlab per-channel)",
  "its noise floor",
  "predicted",
  "shift / predicted",
  "verdict",
  "Li et al.",
  "its noise floor",
];

function shiftTable(ctx, names) {
  const rows = shiftRowsOf(ctx, names);
  if (!rows.length) return notice("No BN layer statistics yet.", "info");
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      { class: "story-table story-shift" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          SHIFT_HEAD.map((h) => el("th", { text: h })),
        ),
      ),
      el("tbody", {}, rows),
    ),
  );
}

/**
 * Per entry and BN layer: the measured shift, its noise floor, the prediction, the verdict,
 * and Li et al.'s statistic. One table for a small net; a collapsed table per stage for a deep
 * one (300 rows per entry would bury the rest).
 */
export function shiftTables(ctx, names, { open }) {
  const content =
    names.length <= MAX_FLAT_LAYERS
      ? shiftTable(ctx, names)
      : el(
          "div",
          { class: "story-stages" },
          layerStages(ctx.runs, names).map((st) =>
            el(
              "details",
              { class: "story-stage", dataset: { stage: st.stage } },
              el("summary", { text: `${st.stage}: ${st.names.length} BN layers` }),
              shiftTable(ctx, st.names),
            ),
          ),
        );
  return fold(
    {
      title: "Variance shift per BN layer: measured, noise floor, predicted, verdict",
      count: ctx.entries.length * names.length,
      open,
      cls: "story-panel story-shift-fold",
      search: {
        placeholder: "search runs and layers",
        rows: () => content.querySelectorAll("tbody tr"),
      },
    },
    content,
  );
}

const para = (...parts) => el("p", {}, ...parts);
const formula = (text) => el("code", { class: "formula", text });

/** What variance shift is and what the numbers mean (collapsed unless opened). */
export function explanation(open) {
  return el(
    "details",
    { class: "panel story-explain", open },
    el("summary", { text: "What is variance shift, and what do these numbers mean?" }),
    para(
      "In training a BN layer normalises each channel by the statistics of the current batch and keeps a " +
        "running average of them (running_var); at inference it normalises with running_var. Dropout right " +
        "before BN makes the training-time variance larger than what the layer receives at inference " +
        "(dropout off), so inference divides by the wrong variance: the variance shift (Li et al., CVPR 2019).",
    ),
    para(
      "Li et al.'s statistic, per BN layer, with variances averaged over channels: ",
      formula("shift_li = max(Var_inference / running_var, running_var / Var_inference)"),
      " — 1 means none.",
    ),
    para(
      "bnlab's per-channel statistic: ",
      formula("shift = mean_c max(r_c, 1/r_c),  r_c = eval_var_c / running_var_c"),
      ". Taking max(r, 1/r) per channel folds sampling noise upward, so with no shift at all it reads about ",
      formula("1 + 0.8·√(2/n)"),
      " for n held-out samples per channel: the noise floor, not 1. The verdict " +
        "counts how many times the floor's excess over 1 the shift's excess is: up to 1.5 is no shift, above 3 " +
        "a real one.",
    ),
    para(
      "Predicted, Dropout (keep probability q) right before BN, with μ and m2 the mean and second moment of " +
        "the dropout's input: ",
      formula("(m2/q − μ²) / (m2 − μ²)"),
      " (1/q for zero-mean input). Through a " + "linear layer (Dropout → Linear(w) → BN): ",
      formula("Var_train(h) = Var_eval(h) + (1/q − 1)·Σ wᵢ² m2ᵢ"),
      " — wide layers mix many features and shift less. Deeper layers inherit the shift of the layers above, " +
        "which a per-layer prediction does not include: it can fall either side of the measurement there.",
    ),
    para(
      "Accuracies: eval = model.eval(); train mode = model.train() at test time (dropout on and BN on " +
        'each test batch\'s statistics: "forgot model.eval()"); BN-only train mode keeps dropout off; ' +
        "recalibrated = BN statistics recomputed on training data with dropout off (PreciseBN). " +
        "Recalibrated − eval is what the shift costs; eval − train mode is what forgetting model.eval() costs.",
    ),
    para(
      "The formulas, their derivations and the tests that check them: docs/science.md in the repository; " +
        "how to read this page: docs/dashboard.md.",
    ),
  );
}
