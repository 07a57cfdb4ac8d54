// The seed studies (backend/presets/*.json) as the dashboard shows them. Pure: no DOM.
//
// A preset's texts (question, look_at, expected) are plain language first; the formulas and
// the summary field names follow after a paragraph break starting "In formulas:", which the
// dashboard shows behind a fold.

export const FORMULAS = "In formulas:";

const DEFAULT_BASE = { name: "experiment", tags: [] };

/** {plain, formulas}: the text before the "In formulas:" paragraph, and that paragraph. */
export function splitFormulas(text) {
  const value = String(text ?? "");
  const at = value.indexOf(`\n\n${FORMULAS}`);
  if (at < 0) return { plain: value.trim(), formulas: null };
  return {
    plain: value.slice(0, at).trim(),
    formulas: value.slice(at + 2 + FORMULAS.length).trim(),
  };
}

// Presets may be a config or a sweep; accept the shapes the API may use.
export function presetParts(preset) {
  const sweep = preset.sweep ?? (preset.grid ? preset : null);
  const base = sweep?.base ?? preset.config ?? preset.base ?? DEFAULT_BASE;
  return { base, grid: sweep?.grid ?? {}, seeds: sweep?.seeds ?? null };
}

export function presetLabel(preset) {
  return preset.title ?? preset.name ?? preset.id ?? "preset";
}

export function presetList(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.presets)) return data.presets;
  if (data && Array.isArray(data.data)) return data.data;
  if (data && typeof data === "object")
    return Object.entries(data).map(([id, p]) => ({ id, ...p }));
  return [];
}

export { DEFAULT_BASE };
