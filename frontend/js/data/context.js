// The one shape the compare view and the run page hand to the story, its tables and its charts
// (views/story.js, charts/story.js, data/story.js): documented here once, built by the views.

/**
 * A run as GET /api/runs/{id} answers it (bnlab/core/schema/runs.py RunPublic).
 * @typedef {Object} Run
 * @property {number} id
 * @property {string} name
 * @property {string} status
 * @property {"engine"|"script"} [kind]
 * @property {Object} config       engine: an ExperimentConfig; script: the user's own dict
 * @property {string[]} tags
 * @property {Object|null} summary final figures (shift_by_layer, test_acc_eval, ...)
 * @property {Array<{name: string, stage: number|null, unit: number|null, place: string}>|null} layer_places
 */

/**
 * One run's series as the views fetched them (GET /api/compare, or the run page's requests).
 * @typedef {Object} RunData
 * @property {Run} run
 * @property {Object<string, Array<number|null>>} metrics   columns: step, val_acc, ...
 * @property {Array<Object>} layers   per layer: {index, name, step, train_var, ...}
 * @property {number|null} [metricsRaw]  raw points behind a downsampled metric series
 * @property {number|null} [layersRaw]
 */

/**
 * What one curve, bar or table row stands for: one run, or a group of runs.
 * @typedef {Object} Entry
 * @property {string} key     stable id ("12", "12+13", "model.dropout.rate=0.5")
 * @property {Run[]} runs
 * @property {string} label   names the entry by what differs ("#12 rate=0.5")
 */

/**
 * The story's context: everything the story's panels, tables and charts read, nothing more.
 * @typedef {Object} StoryContext
 * @property {Run[]} runs                    every compared run (hidden ones included)
 * @property {Map<number, RunData>} data     by run id
 * @property {Entry[]} entries               the visible entries, in drawing order
 * @property {(entry: Entry) => string} colourOf   one colour per entry (its first run's)
 * @property {Map<number, Map<string, import("./layers.js").LayerInfo>>} layerInfo  by run id
 * @property {boolean} single                the run page (one run): no cross-run panels
 */

/**
 * The compare view's context: the story's, plus what only the compare view's own charts use.
 * @typedef {StoryContext & {
 *   ids: number[],
 *   allEntries: Entry[],
 *   isHidden: (entry: Entry) => boolean,
 *   entryOf: (id: number) => Entry|undefined,
 *   onX: (id: number, series: {x: number[], y: Array<number|null>}) => ({x: number[], y: Array<number|null>}|null),
 *   mapperOf: (id: number) => ((step: number) => number)|null,
 * }} CompareContext
 */

/**
 * The story's context for one run (the run page): one entry, one colour.
 * @param {Run} run
 * @param {Object} metrics
 * @param {Array<Object>} layers
 * @param {{colour: string, layerInfo?: Map<string, import("./layers.js").LayerInfo>}} options
 * @returns {StoryContext}
 */
export function runContext(run, metrics, layers, { colour, layerInfo = new Map() }) {
  const entry = { key: String(run.id), runs: [run], label: `#${run.id} ${run.name}` };
  return {
    runs: [run],
    data: new Map([[run.id, { run, metrics, layers }]]),
    entries: [entry],
    colourOf: () => colour,
    layerInfo: new Map([[run.id, layerInfo]]),
    single: true,
  };
}

/** The story's view of a compare context: only the fields the story reads. */
export function storyContext(ctx) {
  const { runs, data, entries, colourOf, layerInfo } = ctx;
  return { runs, data, entries, colourOf, layerInfo, single: false };
}
