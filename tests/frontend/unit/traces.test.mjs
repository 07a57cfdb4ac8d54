// frontend/js/charts/traces.js: many look-alike lines merged into one trace, hovers kept.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MERGE_ABOVE, line, mergeTraces, smooth } from "../../../frontend/js/charts/traces.js";

test("past MERGE_ABOVE traces, same-looking lines become one with gaps; each point keeps its name", () => {
  const traces = Array.from({ length: MERGE_ABOVE + 1 }, (_, i) =>
    line({ x: [0, 1], y: [i, i + 1], name: `#${i}`, color: "#111111", meta: { runs: [i] } }),
  );
  const merged = mergeTraces(traces);
  assert.equal(merged.length, 1);
  assert.equal(merged[0].x.length, 2 * traces.length + traces.length - 1);
  assert.deepEqual(merged[0].customdata.slice(0, 3), ["#0", "#0", null]);
  assert.deepEqual(merged[0].meta.runs.length, traces.length);
  assert.equal(mergeTraces(traces.slice(0, 3)).length, 3);
});

test("an accuracy line keeps its percentage hover when merged", () => {
  const traces = Array.from({ length: MERGE_ABOVE + 1 }, (_, i) =>
    line({ x: [0], y: [0.5], name: `#${i}`, color: "#111111", yFormat: ".1%" }),
  );
  assert.equal(mergeTraces(traces)[0].hovertemplate, "%{y:.1%}<extra>%{customdata}</extra>");
});

test("smoothing is TensorBoard's debiased moving average and skips gaps", () => {
  // weights 0.5: (0.25·1 + 0.5·3) / (0.25 + 0.5)
  assert.deepEqual(smooth([1, null, 3], 0.5), [1, null, (0.25 * 1 + 0.5 * 3) / (0.25 + 0.5)]);
  assert.deepEqual(smooth([1, 2], 0), [1, 2]);
});
