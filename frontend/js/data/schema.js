// The ExperimentConfig JSON schema as the server serves it (/openapi.json, fetched by
// lib/api.js loadSchemas): the submit form's options and defaults come from here, so they are
// the server's own (bnlab/core/registry.py → the schema's Literals → this) and cannot drift
// from a hand copy. Pure: these functions read the schemas object they are given.

function resolve(schemas, node) {
  while (node && node.$ref) node = schemas[node.$ref.split("/").at(-1)];
  return node;
}

// The non-null branch of `X | None` (anyOf [X, {type: null}]), and whether null is allowed.
function nonNull(schemas, node) {
  node = resolve(schemas, node);
  if (node && Array.isArray(node.anyOf)) {
    const rest = node.anyOf.filter((n) => n.type !== "null");
    return { node: resolve(schemas, rest[0]), nullable: rest.length < node.anyOf.length };
  }
  return { node, nullable: false };
}

// The schema node of a dotted config path ("model.dropout.kind") under ExperimentConfig.
export function fieldSchema(schemas, path) {
  let node = schemas.ExperimentConfig;
  let nullable = false;
  for (const key of path.split(".")) {
    ({ node, nullable } = nonNull(schemas, node?.properties?.[key]));
    if (!node) return null;
  }
  return { ...node, nullable };
}

// A select's options: the enum of the field (of its items for a list), "" first when null is
// allowed. Empty when the schema has no enum there.
export function fieldOptions(schemas, path) {
  const node = fieldSchema(schemas, path);
  if (!node) return [];
  const values = node.enum ?? resolve(schemas, node.items)?.enum ?? [];
  return node.nullable ? ["", ...values] : [...values];
}

// Every default the schema states, as a nested config (nested models: their own defaults).
export function defaultsOf(schemas, name = "ExperimentConfig") {
  const out = {};
  for (const [key, prop] of Object.entries(schemas[name]?.properties ?? {})) {
    if ("default" in prop) {
      out[key] = structuredClone(prop.default);
      continue;
    }
    const ref = prop.$ref ?? prop.anyOf?.find((n) => n.$ref)?.$ref;
    if (ref) out[key] = defaultsOf(schemas, ref.split("/").at(-1));
  }
  return out;
}

// Every leaf path of the config (nested models walked), for the form's completeness check.
export function leafPaths(schemas, name = "ExperimentConfig", prefix = "") {
  const paths = [];
  for (const [key, prop] of Object.entries(schemas[name]?.properties ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    const ref = prop.$ref ?? prop.anyOf?.find((n) => n.$ref)?.$ref;
    if (ref && schemas[ref.split("/").at(-1)]?.properties) {
      paths.push(...leafPaths(schemas, ref.split("/").at(-1), path));
    } else {
      paths.push(path);
    }
  }
  return paths;
}
