// frontend/js/data/verdict.js: a shift judged against its noise floor and its prediction, and
// the advice drawn from a run's measurements.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  advice,
  headline,
  noiseMultiple,
  predictionVerdict,
  runFacts,
  shiftVerdict,
} from "../../../frontend/js/data/verdict.js";

test("the shift's excess over 1 in noise levels (the floor's excess)", () => {
  assert.ok(Math.abs(noiseMultiple(2.035, 1.05) - 20.7) < 1e-9);
  assert.ok(Math.abs(noiseMultiple(1.02, 1.05) - 0.4) < 1e-9);
  assert.equal(noiseMultiple(1.5, null), null);
  assert.equal(noiseMultiple(1.5, 1), null);
});

test("verdict levels: at the floor, small, real; unknown without a floor", () => {
  assert.equal(shiftVerdict({ shift: 1.06, floor: 1.05 }).level, "none");
  assert.equal(shiftVerdict({ shift: 1.1, floor: 1.05 }).level, "small");
  const real = shiftVerdict({ shift: 2.035, floor: 1.05 });
  assert.equal(real.level, "real");
  assert.equal(real.text, "21× the noise level: a real shift");
  assert.equal(
    shiftVerdict({ shift: 1.2, floor: 1.05 }).text,
    "4.0× the noise level: a real shift",
  );
  assert.equal(shiftVerdict({ shift: 1.4, floor: null }).level, "unknown");
  assert.equal(shiftVerdict({ shift: null, floor: 1.05 }).level, "unknown");
});

test("against the prediction: within the noise or 15 % of its excess matches", () => {
  assert.equal(predictionVerdict(2.035, 1.98, 1.05).level, "matches");
  assert.equal(predictionVerdict(1.07, 1.02, 1.05).level, "matches"); // within the noise
  assert.equal(predictionVerdict(3.0, 2.0, 1.05).level, "above");
  assert.equal(predictionVerdict(1.5, 2.0, 1.05).level, "below");
  assert.equal(predictionVerdict(1.5, null, 1.05), null);
});

const run = (
  id,
  {
    shift,
    floor,
    predicted,
    evalAcc,
    recal,
    trainMode,
    block = ["linear", "dropout", "batchnorm"],
    kind = "bernoulli",
    rate = 0.5,
  },
) => ({
  run: {
    id,
    name: `run ${id}`,
    kind: "engine",
    config: { model: { block, dropout: { kind, rate } } },
    summary: {
      shift_by_layer: { "blocks.0.bn": shift },
      shift_floor_by_layer: { "blocks.0.bn": floor },
      shift_predicted_by_layer: predicted ? { "blocks.0.bn": predicted } : {},
      test_acc_eval: evalAcc,
      test_acc_recalibrated: recal,
      test_acc_train_mode: { 8: trainMode },
    },
  },
  metrics: {},
  layers: [],
});

test("advice: move dropout, less noise, recalibrate, eval mode, each with its study", () => {
  const facts = [
    runFacts(
      run(1, {
        shift: 2.0,
        floor: 1.05,
        predicted: 1.98,
        evalAcc: 0.8,
        recal: 0.83,
        trainMode: 0.5,
      }),
    ),
    runFacts(
      run(2, {
        shift: 1.04,
        floor: 1.05,
        evalAcc: 0.9,
        recal: 0.901,
        trainMode: 0.89,
        block: ["linear", "batchnorm"],
      }),
    ),
  ];
  const items = advice(facts);
  assert.deepEqual(
    items.map((i) => i.id),
    ["moveDropout", "lessNoise", "recalibrate", "evalMode"],
  );
  assert.deepEqual(
    items.map((i) => i.runs),
    [[1], [1], [1], [1]],
  );
  assert.deepEqual(
    items.map((i) => i.study),
    ["variance_shift", "dropout_equal_noise", "population_stats", "population_stats"],
  );
  assert.match(items[2].text, /\+3\.0 pt here/);
  assert.match(items[3].text, /30\.0 pt at batch 8/);
  assert.match(
    headline(facts),
    /^A real shift in 1 of 2 runs\. Largest: #1 blocks\.0\.bn: shift 2\.000 \(noise floor 1\.050\), 20× the noise level: a real shift; matches the prediction \(1\.980\)\.$/,
  );
});

test("no shift anywhere: no action needed; without floors: cannot tell", () => {
  const calm = [
    runFacts(run(1, { shift: 1.04, floor: 1.05, evalAcc: 0.9, recal: 0.9, trainMode: 0.9 })),
  ];
  assert.deepEqual(
    advice(calm).map((i) => i.id),
    ["noShift"],
  );
  const old = [
    runFacts(run(2, { shift: 1.3, floor: null, evalAcc: 0.9, recal: 0.9, trainMode: 0.9 })),
  ];
  assert.deepEqual(advice(old), []);
  assert.match(headline(old), /^No noise floor recorded for this run/);
});

test("a shift without dropout in the blocks points at the running statistics", () => {
  const f = [
    runFacts(
      run(1, {
        shift: 1.6,
        floor: 1.05,
        evalAcc: 0.9,
        recal: 0.9,
        trainMode: 0.9,
        block: ["linear", "batchnorm"],
      }),
    ),
  ];
  assert.deepEqual(
    advice(f).map((i) => i.id),
    ["lagging"],
  );
});
