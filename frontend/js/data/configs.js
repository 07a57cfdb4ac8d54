// Which config fields differ between runs, labels that name runs by what differs, grouping runs
// that differ only in seed, and the mean with min/max of a group's curves. Pure: no DOM.
//
// Engine runs carry bnlab's ExperimentConfig; script runs (the SDK) carry whatever dict the
// user's script gave. Fields are compared within each kind: an engine run is never labelled
// by fields only script runs have (that printed `name=undefined ...` before), and a run shows
// only the fields it has.

import { flatten, shortPath, shortValue } from "./fields.js";

const NOT_CONFIG = new Set(["name", "tags"]); // labels, not experiment settings
const SEED = "train.seed";
const MAX_LABEL_FIELDS = 4;

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

export const kindOf = (run) => run.kind ?? "engine";

export function configValue(run, path) {
  return flatten(run.config)[path];
}

// Paths whose values are not all equal across `runs` (a path some lack counts as differing).
function differingWithin(runs, ignore) {
  const flat = runs.map((r) => flatten(r.config));
  const paths = [...new Set(flat.flatMap(Object.keys))];
  return paths.filter(
    (p) => !NOT_CONFIG.has(p) && !ignore.includes(p) && flat.some((f) => !same(f[p], flat[0][p])),
  );
}

/**
 * Dotted config paths that differ between runs of the same kind (engine runs among
 * themselves, script runs among themselves), in order of first appearance.
 */
export function differingPaths(runs, { ignore = [] } = {}) {
  const kinds = [...new Set(runs.map(kindOf))];
  const found = kinds.flatMap((k) =>
    differingWithin(
      runs.filter((r) => kindOf(r) === k),
      ignore,
    ),
  );
  return [...new Set(found)];
}

// Whether the runs mix engine and script runs (labels then say which is which).
export const mixedKinds = (runs) => new Set(runs.map(kindOf)).size > 1;

// "#12 rate=0.5 block=lin→drop→bn→act": the differing fields this run has; its own name when
// it has none. Script runs in a mixed compare say so ("script: MyNet").
export function labelFor(run, paths, { id = true, mixed = false } = {}) {
  const flat = flatten(run.config);
  const own = paths.filter((p) => flat[p] !== undefined);
  const parts = own.slice(0, MAX_LABEL_FIELDS).map((p) => `${shortPath(p)}=${shortValue(flat[p])}`);
  if (own.length > MAX_LABEL_FIELDS) parts.push(`+${own.length - MAX_LABEL_FIELDS}`);
  let text = parts.length ? parts.join(" ") : run.name;
  if (mixed && kindOf(run) === "script") {
    text = `script: ${run.summary?.model?.class ?? "own model"} ${text}`;
  }
  return id ? `#${run.id} ${text}` : text;
}

function seedlessKey(run) {
  const flat = flatten(run.config);
  delete flat[SEED];
  for (const key of NOT_CONFIG) delete flat[key];
  return JSON.stringify([kindOf(run), Object.entries(flat).sort(([a], [b]) => a.localeCompare(b))]);
}

/**
 * Entries to draw: one per run, or with `bySeed` one per set of runs that differ only in
 * train.seed. Each entry: {key, runs, label}.
 */
export function entries(runs, { bySeed = false } = {}) {
  const mixed = mixedKinds(runs);
  if (!bySeed) {
    const paths = differingPaths(runs);
    return runs.map((run) => ({
      key: String(run.id),
      runs: [run],
      label: labelFor(run, paths, { mixed }),
    }));
  }
  const groups = new Map();
  for (const run of runs) {
    const key = seedlessKey(run);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(run);
  }
  const paths = differingPaths(runs, { ignore: [SEED] });
  return [...groups.values()].map((members) => {
    const ids = members.map((r) => `#${r.id}`).join(",");
    const base = labelFor(members[0], paths, { id: false, mixed });
    const label =
      members.length > 1 ? `${ids} ${base} (${members.length} seeds)` : `${ids} ${base}`;
    return { key: members.map((r) => r.id).join("+"), runs: members, label };
  });
}

// Mean, min and max at every step that any member has (members may be at different steps
// while running; a step's statistics use the members that reached it).
export function aggregate(series) {
  const byStep = new Map();
  for (const { x, y } of series) {
    x.forEach((step, i) => {
      const v = y[i];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      if (!byStep.has(step)) byStep.set(step, []);
      byStep.get(step).push(v);
    });
  }
  const x = [...byStep.keys()].sort((a, b) => a - b);
  const mean = [];
  const lo = [];
  const hi = [];
  for (const step of x) {
    const vs = byStep.get(step);
    mean.push(vs.reduce((a, b) => a + b, 0) / vs.length);
    lo.push(Math.min(...vs));
    hi.push(Math.max(...vs));
  }
  return { x, mean, lo, hi };
}

export function lastFinite(values) {
  for (let i = (values?.length ?? 0) - 1; i >= 0; i -= 1) {
    if (values[i] !== null && Number.isFinite(values[i])) return values[i];
  }
  return null;
}
