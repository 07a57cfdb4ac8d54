// The ExperimentConfig fields the submit form edits (bnlab/core/schema/experiment.py), with how
// each is parsed from text. The form, the sweep builder and the config diff share this table.
// A select's options and every default come from the served JSON schema (schema.js), not from
// here; tests/frontend/test_form_schema.py fails when the schema has a field this table lacks.

export const SECTIONS = [
  {
    title: "Data",
    fields: [
      { path: "dataset.name", label: "dataset", type: "select" },
      { path: "dataset.path", label: "path (under datasets dir)", type: "text", nullable: true },
      { path: "dataset.upload_id", label: "upload id", type: "text", nullable: true },
      { path: "dataset.limit", label: "limit (first N samples)", type: "int", nullable: true },
      { path: "dataset.n_samples", label: "n samples (generated)", type: "int", nullable: true },
      { path: "dataset.val_fraction", label: "validation fraction", type: "float" },
      { path: "dataset.label_mode", label: "labels (cifar100: fine / coarse)", type: "select" },
    ],
  },
  {
    title: "Model",
    fields: [
      { path: "model.arch", label: "architecture", type: "select" },
      { path: "model.widths", label: "widths (per block)", type: "intlist" },
      { path: "model.block", label: "block order", type: "block" },
      { path: "model.activation", label: "activation", type: "select" },
      { path: "model.pooling", label: "pooling (cnn)", type: "select" },
      { path: "model.head_dropout", label: "head dropout rate", type: "float", nullable: true },
      // residual nets (resnet, wrn, densenet): they ignore widths, block order and pooling
      {
        path: "model.depth",
        label: "depth (resnet/wrn/densenet; empty = default)",
        type: "int",
        nullable: true,
      },
      { path: "model.widen", label: "widen k (wrn)", type: "int" },
      { path: "model.growth", label: "growth k (densenet)", type: "int" },
      { path: "model.bottleneck", label: "bottleneck units (resnet)", type: "bool" },
      {
        path: "model.dropout_at",
        label: "dropout placement (residual nets)",
        type: "select",
        nullable: true,
      },
    ],
  },
  {
    title: "Dropout",
    fields: [
      { path: "model.dropout.kind", label: "kind", type: "select" },
      { path: "model.dropout.rate", label: "rate", type: "float" },
      { path: "model.dropout.mask", label: "mask", type: "select" },
    ],
  },
  {
    title: "Batch norm",
    fields: [
      {
        path: "model.batchnorm.momentum",
        label: "momentum (empty = cumulative)",
        type: "float",
        nullable: true,
      },
      { path: "model.batchnorm.eps", label: "eps", type: "float" },
      { path: "model.batchnorm.affine", label: "affine", type: "bool" },
      { path: "model.batchnorm.gamma_init", label: "gamma init", type: "float" },
      { path: "model.batchnorm.beta_init", label: "beta init", type: "float" },
      { path: "model.batchnorm.impl", label: "implementation", type: "select" },
    ],
  },
  {
    title: "Training",
    fields: [
      { path: "train.epochs", label: "epochs", type: "int" },
      { path: "train.batch_size", label: "batch size", type: "int" },
      { path: "train.optimizer", label: "optimizer", type: "select" },
      { path: "train.nesterov", label: "nesterov (sgd)", type: "bool" },
      { path: "train.lr", label: "learning rate", type: "float" },
      { path: "train.momentum", label: "momentum (sgd)", type: "float" },
      { path: "train.weight_decay", label: "weight decay", type: "float" },
      { path: "train.schedule", label: "lr schedule", type: "select" },
      {
        path: "train.milestones",
        label: "milestones (step schedule; empty = 50 %, 75 %)",
        type: "intlist",
        nullable: true,
      },
      { path: "train.lr_decay", label: "lr decay (step schedule)", type: "float" },
      { path: "train.warmup_epochs", label: "warm-up epochs", type: "float" },
      { path: "train.augment", label: "augment (crop + flip, colour images)", type: "bool" },
      { path: "train.precision", label: "precision", type: "select" },
      { path: "train.seed", label: "seed", type: "int" },
      { path: "train.device", label: "device", type: "text" },
    ],
  },
  {
    title: "Probes",
    fields: [
      { path: "probe.every_steps", label: "probe every N steps", type: "int" },
      { path: "probe.eval_batches", label: "eval batches", type: "int" },
      {
        path: "probe.train_mode_every",
        label: "train-mode validation every N probes (val_acc_train_mode; and at the last step)",
        type: "int",
      },
      {
        path: "probe.train_mode_test_batch_sizes",
        label: "train-mode test batch sizes",
        type: "intlist",
      },
      {
        path: "probe.train_mode_draws",
        label:
          "train-mode draws (the train-mode test accuracy is the mean over this many dropout draws)",
        type: "int",
      },
      { path: "probe.recalibrate", label: "recalibrate BN after training", type: "bool" },
      { path: "probe.recalibrate_samples", label: "recalibration samples", type: "int" },
      {
        path: "probe.grad_noise",
        label:
          "gradient-noise probe (grad_cos, a cosine: higher = less noise; ~33 backward passes per probe)",
        type: "bool",
      },
    ],
  },
];

export const FIELDS = SECTIONS.flatMap((s) => s.fields);
export const FIELD_BY_PATH = Object.fromEntries(FIELDS.map((f) => [f.path, f]));

// The block layers besides the weight layer (linear | conv), in the schema's order; filled
// from the served schema (model.block's enum) by setBlockLayers before the form is built.
export const WEIGHT_LAYERS = ["linear", "conv"];
export const BLOCK_LAYERS = [];

export function setBlockLayers(names) {
  BLOCK_LAYERS.splice(0, BLOCK_LAYERS.length, ...names.filter((n) => !WEIGHT_LAYERS.includes(n)));
}

export function getDotted(data, path) {
  return path.split(".").reduce((node, key) => (node == null ? undefined : node[key]), data);
}

export function setDotted(data, path, value) {
  const keys = path.split(".");
  let node = data;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key];
  }
  node[keys.at(-1)] = value;
}

export class ParseError extends Error {}

// Text → value for one field; throws ParseError with a message for the user.
export function parseValue(field, text) {
  const raw = String(text ?? "").trim();
  if (raw === "" || raw === "null") {
    if (field.nullable) return null;
    if (field.type !== "text") throw new ParseError("a value is required");
  }
  switch (field.type) {
    case "int": {
      const n = Number(raw);
      if (!Number.isInteger(n)) throw new ParseError(`'${raw}' is not an integer`);
      return n;
    }
    case "float": {
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new ParseError(`'${raw}' is not a number`);
      return n;
    }
    case "bool":
      if (["true", "1", "yes", "on"].includes(raw.toLowerCase())) return true;
      if (["false", "0", "no", "off"].includes(raw.toLowerCase())) return false;
      throw new ParseError(`'${raw}' is not true/false`);
    case "intlist":
      return raw
        .split(/[\s,]+/)
        .filter(Boolean)
        .map((t) => {
          const n = Number(t);
          if (!Number.isInteger(n)) throw new ParseError(`'${t}' is not an integer`);
          return n;
        });
    case "block":
      return raw.split(/[\s,>]+/).filter(Boolean);
    default:
      return raw;
  }
}

// A sweep cell's values: list fields take alternatives separated by "|", scalars by ",".
export function parseSweepValues(field, text) {
  const listy = field.type === "intlist" || field.type === "block";
  return String(text)
    .split(listy ? "|" : ",")
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => parseValue(field, t));
}

export function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.join(", ");
  return String(value);
}

// Flatten a config to {dotted.path: value}; lists stay whole (they are one field).
export function flatten(data, prefix = "", out = {}) {
  for (const [key, value] of Object.entries(data || {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, path, out);
    else out[path] = value;
  }
  return out;
}

const SHORT = { batchnorm: "bn", activation: "act", dropout: "drop", linear: "lin", conv: "conv" };

export function shortValue(value) {
  if (Array.isArray(value)) {
    return value.map((v) => SHORT[v] ?? v).join(typeof value[0] === "string" ? "→" : "×");
  }
  if (typeof value === "number" && !Number.isInteger(value))
    return String(Number(value.toPrecision(4)));
  return value === null ? "none" : String(value);
}

// The last path component, or the last two where the last is ambiguous (e.g. "momentum").
export function shortPath(path) {
  const parts = path.split(".");
  const last = parts.at(-1);
  const ambiguous = FIELDS.filter((f) => f.path.split(".").at(-1) === last).length > 1;
  return ambiguous && parts.length > 1 ? parts.slice(-2).join(".") : last;
}
