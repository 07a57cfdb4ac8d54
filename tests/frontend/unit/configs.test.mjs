// frontend/js/data/configs.js: labels of engine and script runs side by side.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  differingPaths,
  entries,
  labelFor,
  mixedKinds,
} from "../../../frontend/js/data/configs.js";

const engine = (id, rate, seed = 0) => ({
  id,
  name: `engine ${id}`,
  kind: "engine",
  config: {
    name: "x",
    dataset: { name: "digits", val_fraction: 0.2, path: null, upload_id: null },
    model: { dropout: { rate } },
    train: { seed },
  },
});
const script = (id, config) => ({
  id,
  name: `script ${id}`,
  kind: "script",
  config,
  summary: { model: { class: "MyNet" } },
});

test("fields are compared within each kind: no engine field labels a script run", () => {
  const runs = [engine(1, 0.1), engine(2, 0.5), script(3, { lr: 0.1 }), script(4, { lr: 0.01 })];
  assert.deepEqual(differingPaths(runs), ["model.dropout.rate", "lr"]);
  const labels = entries(runs).map((e) => e.label);
  assert.deepEqual(labels, [
    "#1 rate=0.1",
    "#2 rate=0.5",
    "#3 script: MyNet lr=0.1",
    "#4 script: MyNet lr=0.01",
  ]);
  for (const label of labels) assert.ok(!label.includes("undefined"), label);
});

test("one engine run beside one script run: each is named by its own name", () => {
  const runs = [engine(1, 0.5), script(2, { lr: 0.1, note: "mine" })];
  assert.ok(mixedKinds(runs));
  assert.deepEqual(differingPaths(runs), []);
  assert.deepEqual(
    entries(runs).map((e) => e.label),
    ["#1 engine 1", "#2 script: MyNet script 2"],
  );
});

test("a run lacking a differing field is labelled by the fields it has", () => {
  const a = script(1, { lr: 0.1, wd: 0.0005 });
  const b = script(2, { lr: 0.1 });
  assert.deepEqual(differingPaths([a, b]), ["wd"]);
  assert.equal(labelFor(b, ["wd"]), "#2 script 2");
  assert.equal(labelFor(a, ["wd"]), "#1 wd=0.0005");
});

test("seeds group into one entry; kinds never share one", () => {
  const runs = [engine(1, 0.5, 0), engine(2, 0.5, 1), engine(3, 0.1, 0)];
  const grouped = entries(runs, { bySeed: true });
  assert.deepEqual(
    grouped.map((e) => e.key),
    ["1+2", "3"],
  );
  assert.match(grouped[0].label, /\(2 seeds\)$/);
});
