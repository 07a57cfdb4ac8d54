// frontend/js/data/runs.js and csv.js: the runs table's cells and the series CSV.
import assert from "node:assert/strict";
import { test } from "node:test";

import { layersCsv, metricsCsv } from "../../../frontend/js/data/csv.js";
import {
  column,
  columnsFrom,
  DEFAULT_COLUMNS,
  modelText,
  unplanned,
} from "../../../frontend/js/data/runs.js";

test("cells: accuracies as percentages, a script run's own model, no made-up progress", () => {
  const engine = {
    id: 1,
    kind: "engine",
    progress: 0.5,
    config: { model: { arch: "mlp", widths: [64, 64, 64, 64] } },
    summary: { test_acc_eval: 0.9264, test_acc_train_mode: { 8: 0.5, 1: null } },
  };
  const script = {
    id: 2,
    kind: "script",
    total_steps: null,
    step: 40,
    config: { lr: 0.1 },
    summary: { model: { class: "Net" } },
  };
  assert.equal(column("summary.test_acc_eval").cell(engine), "92.6%");
  assert.equal(column("summary.test_acc_train_mode.8").cell(engine), "50.0%");
  assert.equal(column("train_mode").cell(engine), "– @1"); // the smallest batch, unmeasured
  assert.equal(modelText(engine), "mlp 4×64");
  assert.equal(modelText(script), "script: Net");
  assert.equal(column("dropout").cell(script), "–");
  assert.equal(column("config.lr").cell(script), "0.100");
  assert.ok(unplanned(script) && !unplanned(engine));
  assert.equal(column("progress").cell(script), "step 40");
});

test("?cols= keeps known columns only", () => {
  assert.deepEqual(columnsFrom("id,name,summary.test_acc_eval,evil<script>"), [
    "id",
    "name",
    "summary.test_acc_eval",
  ]);
  assert.deepEqual(columnsFrom(""), DEFAULT_COLUMNS);
});

test("CSV: every column, quoted where it must be", () => {
  assert.equal(metricsCsv({ step: [0, 4], val_acc: [0.5, null] }), "step,val_acc\n0,0.5\n4,\n");
  const csv = layersCsv([{ index: 0, name: 'a,"b"', step: [4], shift: [1.5] }]).split("\n");
  assert.ok(csv[0].startsWith("layer,name,step,train_mean"));
  assert.ok(csv[1].startsWith('0,"a,""b""",4,'));
});
