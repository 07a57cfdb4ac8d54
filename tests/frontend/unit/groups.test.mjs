// frontend/js/data/groups.js: bands over a group's runs, stages of deep nets, the x-axis.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  aggregateBand,
  groupEntries,
  pickLayers,
  stagesOf,
  stepRange,
  xMapper,
} from "../../../frontend/js/data/groups.js";

test("mean with a min/max or sample-sd band at every x any member has", () => {
  const series = [
    { x: [0, 1, 2], y: [1, 2, 3] },
    { x: [0, 1], y: [3, null] },
  ];
  const mm = aggregateBand(series, "minmax");
  assert.deepEqual(mm, { x: [0, 1, 2], mean: [2, 2, 3], lo: [1, 2, 3], hi: [3, 2, 3] });
  const sd = aggregateBand(series, "sd");
  assert.ok(Math.abs(sd.hi[0] - (2 + Math.SQRT2)) < 1e-12); // sd of {1, 3} = √2
  assert.deepEqual([sd.lo[1], sd.hi[1]], [2, 2]); // one value: no spread
});

test("group by a config field; runs without it form their own group", () => {
  const run = (id, rate) => ({
    id,
    name: `r${id}`,
    config: rate === undefined ? {} : { model: { dropout: { rate } } },
  });
  const entries = groupEntries(
    [run(1, 0.1), run(2, 0.1), run(3, 0.5), run(4)],
    "model.dropout.rate",
  );
  assert.deepEqual(
    entries.map((e) => [e.label, e.runs.map((r) => r.id)]),
    [
      ["rate=0.1 (n=2)", [1, 2]],
      ["rate=0.5 (n=1)", [3]],
      ["rate=(not set) (n=1)", [4]],
    ],
  );
});

test("stages of a deep net from its layer names, and the layers a view draws", () => {
  const names = ["stage1.unit1.bn1", "stage1.unit1.bn2", "stage2.unit1.bn1", "head.bn"];
  assert.deepEqual(
    stagesOf(names, [0, 1, 2, 3]).map((s) => [s.stage, s.indices]),
    [
      ["stage1", [0, 1]],
      ["stage2", [2]],
      ["head", [3]],
    ],
  );
  assert.deepEqual(pickLayers(names, [0, 1, 2, 3], null, { stage: "stage1" }).shown, [0, 1]);
  assert.deepEqual(pickLayers(names, [0, 1, 2, 3], null, { layer: "2" }).shown, [2]);
  assert.deepEqual(pickLayers(names, [0, 1, 2, 3], null, { max: 2 }).shown, [0, 1]);
});

test("x by epoch and wall time from the run's own records, and back to steps", () => {
  const data = {
    run: { summary: {} },
    metrics: { step: [0, 100, 200], epoch: [0, 1, 2], wall_time: [10, 20, 130] },
  };
  const epoch = xMapper("epoch", data);
  assert.equal(epoch(150), 1.5);
  const wall = xMapper("wall", data);
  assert.ok(Math.abs(wall(200) - 120) < 1e-9);
  const [from, to] = stepRange(epoch, [0.5, 1.5], 400); // covers steps 50..150, a step to spare
  assert.ok(from >= 49 && from <= 50 && to >= 150 && to <= 151, [from, to]);
  assert.equal(xMapper("epoch", { run: {}, metrics: { step: [0], epoch: [0] } }), null);
  const paced = xMapper("wall", {
    run: { summary: { steps_per_s: 50 } },
    metrics: { step: [0], wall_time: [null] },
  });
  assert.ok(Math.abs(paced(100) - 2) < 1e-12);
});
