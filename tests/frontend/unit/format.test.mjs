// frontend/js/data/format.js: one format per kind of quantity.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  fmt,
  groupStat,
  isAccuracy,
  metricValue,
  pct,
  plotText,
  points,
  sdPoints,
} from "../../../frontend/js/data/format.js";

test("accuracies read as percentages, their differences in points", () => {
  assert.equal(pct(0.9264), "92.6%");
  assert.equal(pct(null), "–");
  assert.equal(points(0.012), "+1.2 pt");
  assert.equal(points(-0.0349), "-3.5 pt");
  assert.equal(sdPoints(0.0123), "1.2 pt");
});

test("accuracy keys are told from other figures", () => {
  for (const key of [
    "summary.test_acc_eval",
    "val_acc",
    "summary.test_acc_train_mode.8",
    "test_acc_recalibrated",
  ]) {
    assert.ok(isAccuracy(key), key);
  }
  for (const key of [
    "summary.shift_by_layer",
    "summary.steps_per_s",
    "accuracy_like_name",
    "cache",
  ]) {
    assert.ok(!isAccuracy(key), key);
  }
  assert.equal(metricValue("summary.test_acc_eval", 0.5), "50.0%");
  assert.equal(metricValue("summary.wall_s", 12.3456), "12.346");
});

test("a group's accuracy reads like the table's rows: 89.5% ± 1.2 pt", () => {
  assert.equal(
    groupStat("summary.test_acc_eval", { n: 3, mean: 0.895, sd: 0.012 }),
    "89.5% ± 1.2 pt",
  );
  assert.equal(groupStat("summary.test_acc_eval", { n: 1, mean: 0.9, sd: null }), "90.0%");
  assert.equal(groupStat("summary.wall_s", { n: 2, mean: 1.5, sd: 0.25 }), "1.500 ± 0.250");
  assert.equal(groupStat("summary.test_acc_eval", { n: 0 }), "–");
});

test("numbers and user text", () => {
  assert.equal(fmt(2.0349), "2.035");
  assert.equal(fmt(3), "3");
  assert.equal(fmt(0.00001234), "1.23e-5");
  assert.equal(fmt(undefined), "–");
  assert.equal(plotText("<b>&"), "&lt;b&gt;&amp;");
});
