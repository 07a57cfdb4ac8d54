// Names a BN layer the way a reader recognises it: its module path, its torch class and what
// feeds it ("blocks.0.bn · BatchNorm1d after Dropout"). Pure: no DOM, no fetch.
//
// Engine runs: from POST /api/describe on the run's config (bnlab/core/schema/describe.py
// gives every BN's `module` and `after`). Script runs (a user's own nn.Module): from what the
// SDK's probe recorded in summary.model: `bn_info` [{name, type, after}] where present, else
// the dropouts that feed a BN directly (`dropouts[].before_bn`).

/** @typedef {{name: string, module: string|null, after: string|null, feed: string|null}} LayerInfo */

/** LayerInfo by name from a describe() answer. @returns {Map<string, LayerInfo>} */
export function fromDescription(description) {
  const out = new Map();
  for (const bn of description?.bn_layers ?? []) {
    out.set(bn.name, {
      name: bn.name,
      module: bn.module ?? null,
      after: bn.after ?? null,
      feed: bn.feed ?? null,
    });
  }
  return out;
}

/** LayerInfo by name from a script run's summary.model. @returns {Map<string, LayerInfo>} */
export function fromScriptSummary(summary) {
  const model = summary?.model ?? {};
  const out = new Map();
  for (const bn of Array.isArray(model.bn_info) ? model.bn_info : []) {
    if (bn && typeof bn.name === "string") {
      out.set(bn.name, {
        name: bn.name,
        module: bn.type ?? null,
        after: bn.after ?? null,
        feed: null,
      });
    }
  }
  for (const d of Array.isArray(model.dropouts) ? model.dropouts : []) {
    if (!d?.before_bn || out.get(d.before_bn)?.after) continue;
    const rate = Number.isFinite(d.rate) ? ` p=${d.rate}` : "";
    out.set(d.before_bn, {
      name: d.before_bn,
      module: out.get(d.before_bn)?.module ?? null,
      after: "Dropout",
      feed: `${d.name}${rate}`,
    });
  }
  return out;
}

/** "blocks.0.bn · BatchNorm1d after Dropout"; the bare name when nothing more is known. */
export function layerLabel(name, info) {
  if (!info || (!info.module && !info.after)) return name;
  const module = info.module ? ` · ${info.module}` : " ·";
  return `${name}${module}${info.after ? ` after ${info.after}` : ""}`;
}

// The longer form for a tooltip: the label and the feed spelled out.
export function layerTitle(name, info) {
  const label = layerLabel(name, info);
  return info?.feed ? `${label} (fed by ${info.feed})` : label;
}

/**
 * The describe request's key for an engine run: runs whose configs build the same network
 * share one answer (a sweep over rates or seeds asks once per model, not once per run).
 */
export function describeKey(run) {
  if ((run.kind ?? "engine") !== "engine" || !run.config?.model) return null;
  const { model, dataset } = run.config;
  const { dropout, batchnorm, ...shape } = model;
  // the dropout's kind and rate and BN's numbers change no layer (BN's impl changes its class)
  return JSON.stringify([
    dataset?.name,
    dataset?.upload_id ?? null,
    shape,
    batchnorm?.impl ?? null,
    Boolean(dropout),
  ]);
}

/**
 * Every run's layer infos in one map per run id, from the answers by describeKey (engine)
 * and the summaries (script). @returns {Map<number, Map<string, LayerInfo>>}
 */
export function layerInfos(runs, descriptions) {
  const out = new Map();
  for (const run of runs) {
    const key = describeKey(run);
    out.set(run.id, key ? fromDescription(descriptions.get(key)) : fromScriptSummary(run.summary));
  }
  return out;
}

/** The info of layer `name` from the first run that has one. */
export function infoOf(infos, name) {
  for (const map of infos.values()) {
    const info = map.get(name);
    if (info && (info.module || info.after)) return info;
  }
  return null;
}
