// What the runs table knows about a run, without the DOM: the statuses, which are terminal, the
// named columns with their cell text and sort key, any config/summary field as a column, and
// the fields a set of runs offers for the column picker and group-by. views/runs.js draws them.

import { DASHLESS, fmt, metricValue, pct } from "./format.js";
import { flatten, shortValue } from "./fields.js";

// The registry's statuses (bnlab/core/registry.py; tests/bnlab/core/test_registry.py checks).
export const STATUSES = [
  "queued",
  "running",
  "succeeded",
  "failed",
  "cancelled",
  "diverged",
  "crashed",
];
// crashed: a script run (the bnlab SDK) whose client went silent
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "diverged", "crashed"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

// A script run whose loop did not say its length (bnlab.init without total_steps): its
// progress has no denominator, so only its step is shown, never a made-up fraction.
export function unplanned(run) {
  return run.kind === "script" && (run.total_steps === null || run.total_steps === undefined);
}

// GET /api/runs answers {data, count}; older shapes are accepted too.
export function runList(data) {
  if (Array.isArray(data)) return { runs: data, count: data.length };
  const runs = data?.data ?? data?.runs ?? data?.items ?? [];
  return { runs, count: data?.count ?? data?.total ?? runs.length };
}

// The train-mode test accuracy at the smallest batch size, every size in the tooltip.
export function trainModeAcc(summary) {
  const modes = summary?.test_acc_train_mode;
  if (!modes || typeof modes !== "object") return { text: DASHLESS, title: "" };
  const sizes = Object.keys(modes).sort((a, b) => Number(a) - Number(b));
  const title = sizes.map((bs) => `batch ${bs}: ${pct(modes[bs])}`).join("\n");
  return { text: sizes.length ? `${pct(modes[sizes[0]])} @${sizes[0]}` : DASHLESS, title };
}

// [64, 64, 64, 64, 64] → "5×64": deep nets stay readable.
export function widthsText(widths) {
  const same = widths.length > 3 && widths.every((w) => w === widths[0]);
  return same ? `${widths.length}×${widths[0]}` : shortValue(widths);
}

export function dropoutText(model) {
  const d = model.dropout ?? {};
  const inBlocks =
    (model.block ?? []).includes("dropout") || (model.dropout_at ?? "none") !== "none";
  const head = model.head_dropout !== null && model.head_dropout !== undefined;
  if (!inBlocks && !head) return "none";
  const mask = d.mask === "per_batch" ? " /batch" : "";
  return `${d.kind} ${fmt(d.rate, 2)}${mask}${head ? ` head ${model.head_dropout}` : ""}`;
}

// What a run trains: an engine run's architecture, a script run's own model class.
export function modelText(run) {
  if (run.kind === "script") return `script: ${run.summary?.model?.class ?? "own model"}`;
  const m = run.config?.model ?? {};
  if (m.arch && m.arch !== "mlp" && m.arch !== "cnn") {
    return `${m.arch}${m.depth ? `-${m.depth}` : ""}${m.widen > 1 ? `-${m.widen}` : ""}`;
  }
  return `${m.arch ?? ""} ${widthsText(m.widths ?? [])}`.trim();
}

export const get = (obj, path) =>
  path.split(".").reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);

/**
 * Named columns; any other key is a dotted path into the run (config.* or summary.*).
 * `sort` is what GET /api/runs?sort= orders by (null: not sortable); `metric` columns get
 * n, mean ± sd per group; `cell(run)` is the cell's text (id, name, status, tags are drawn by
 * the view itself).
 */
export const NAMED = {
  id: { label: "id", sort: "id", num: true },
  name: { label: "name", sort: "name" },
  status: { label: "status", sort: "status" },
  progress: {
    label: "progress",
    sort: "progress",
    num: true,
    cell: (r) => (unplanned(r) ? `step ${r.step ?? 0}` : pct(r.progress)),
  },
  tags: { label: "tags", sort: null },
  data: {
    label: "data",
    sort: "config.dataset.name",
    cell: (r) => r.config?.dataset?.name ?? DASHLESS,
  },
  model: { label: "model", sort: "config.model.arch", cell: modelText },
  kind: { label: "kind", sort: null, cell: (r) => r.kind ?? "engine" },
  block: {
    label: "block",
    sort: null,
    cell: (r) => (r.config?.model?.block ? shortValue(r.config.model.block) : DASHLESS),
  },
  dropout: {
    label: "dropout",
    sort: "config.model.dropout.rate",
    cell: (r) => (r.config?.model ? dropoutText(r.config.model) : DASHLESS),
  },
  bn_momentum: {
    label: "BN mom.",
    sort: "config.model.batchnorm.momentum",
    cell: (r) => {
      const bn = r.config?.model?.batchnorm;
      if (!bn) return DASHLESS;
      return bn.momentum === null ? "cumul." : fmt(bn.momentum, 2);
    },
  },
  "summary.test_acc_eval": {
    label: "test eval",
    sort: "summary.test_acc_eval",
    num: true,
    metric: true,
    cell: (r) => pct(r.summary?.test_acc_eval),
  },
  train_mode: {
    label: "train mode",
    sort: null,
    num: true,
    cell: (r) => trainModeAcc(r.summary).text,
    title: (r) => trainModeAcc(r.summary).title,
  },
  "summary.test_acc_recalibrated": {
    label: "recalibrated",
    sort: "summary.test_acc_recalibrated",
    num: true,
    metric: true,
    cell: (r) => pct(r.summary?.test_acc_recalibrated),
  },
  created_at: {
    label: "created",
    sort: "created_at",
    cell: (r) =>
      String(r.created_at ?? "")
        .slice(0, 16)
        .replace("T", " "),
  },
};

export const DEFAULT_COLUMNS = [
  "id",
  "name",
  "status",
  "tags",
  "data",
  "model",
  "block",
  "dropout",
  "summary.test_acc_eval",
  "train_mode",
  "summary.test_acc_recalibrated",
];

const FIELD_COLUMN = /^(config|summary)(\.[A-Za-z0-9_]+)+$/;

export function column(key) {
  if (NAMED[key]) return { key, ...NAMED[key] };
  const path = key.replace(/^(config|summary)\./, "");
  const isSummary = key.startsWith("summary.");
  return {
    key,
    label: path.split(".").slice(-2).join("."),
    sort: key,
    num: isSummary,
    metric: isSummary,
    cell: (r) => {
      const v = get(r, key);
      if (v === undefined) return DASHLESS;
      return typeof v === "number" ? metricValue(key, v) : shortValue(v);
    },
  };
}

// The columns named in `?cols=` that exist, else the defaults.
export function columnsFrom(text) {
  const cols = String(text ?? "")
    .split(",")
    .map((c) => c.trim())
    .filter(Boolean);
  const valid = cols.filter((c) => NAMED[c] || FIELD_COLUMN.test(c));
  return valid.length ? valid : DEFAULT_COLUMNS;
}

// Summary values worth a column: numbers, and one level into objects of numbers (per batch size).
const SKIP_SUMMARY = new Set(["shift_per_channel", "shift_by_layer", "device", "model"]);

export function candidatePaths(runs) {
  const config = new Set();
  const summary = new Set();
  for (const run of runs) {
    for (const path of Object.keys(flatten(run.config ?? {}))) config.add(`config.${path}`);
    for (const [k, v] of Object.entries(run.summary ?? {})) {
      if (SKIP_SUMMARY.has(k)) continue;
      if (typeof v === "number") summary.add(`summary.${k}`);
      else if (v && typeof v === "object" && !Array.isArray(v)) {
        for (const [k2, v2] of Object.entries(v))
          if (typeof v2 === "number") summary.add(`summary.${k}.${k2}`);
      }
    }
  }
  return { config: [...config].sort(), summary: [...summary].sort() };
}

// Two sets of known paths merged (the pickers grow as pages of runs are read).
export function mergePaths(a, b) {
  return {
    config: [...new Set([...a.config, ...b.config])].sort(),
    summary: [...new Set([...a.summary, ...b.summary])].sort(),
  };
}
