// frontend/js/data/layers.js: BN layers named with their type and what feeds them.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  describeKey,
  fromDescription,
  fromScriptSummary,
  layerInfos,
  layerLabel,
  layerTitle,
} from "../../../frontend/js/data/layers.js";

test("engine layers from describe: module path, type, feed", () => {
  const info = fromDescription({
    bn_layers: [
      {
        name: "blocks.0.bn",
        module: "BatchNorm1d",
        after: "Dropout",
        feed: "blocks.0.drop <- blocks.0.linear",
      },
    ],
  });
  assert.equal(
    layerLabel("blocks.0.bn", info.get("blocks.0.bn")),
    "blocks.0.bn · BatchNorm1d after Dropout",
  );
  assert.equal(
    layerTitle("blocks.0.bn", info.get("blocks.0.bn")),
    "blocks.0.bn · BatchNorm1d after Dropout (fed by blocks.0.drop <- blocks.0.linear)",
  );
});

test("script layers from the SDK's summary: its bn_info, else the dropouts before a BN", () => {
  const summary = {
    model: {
      dropouts: [
        { name: "features.2", kind: "bernoulli", rate: 0.5, before_bn: "features.3" },
        { name: "head.drop", rate: 0.2, before_bn: null },
      ],
    },
  };
  const info = fromScriptSummary(summary);
  assert.equal(layerLabel("features.3", info.get("features.3")), "features.3 · after Dropout");
  assert.equal(layerLabel("features.7", info.get("features.7")), "features.7");
  const typed = fromScriptSummary({
    model: { bn_info: [{ name: "2", type: "BatchNorm2d", after: "Conv2d" }] },
  });
  assert.equal(layerLabel("2", typed.get("2")), "2 · BatchNorm2d after Conv2d");
  assert.equal(fromScriptSummary(null).size, 0);
});

test("one describe request per network: rates and seeds share it, shapes do not", () => {
  const run = (id, model) => ({
    id,
    kind: "engine",
    config: { dataset: { name: "digits" }, model },
  });
  const base = {
    arch: "mlp",
    widths: [64],
    block: ["linear", "dropout", "batchnorm"],
    dropout: { rate: 0.1 },
    batchnorm: { momentum: 0.1 },
  };
  const a = run(1, base);
  const b = run(2, { ...base, dropout: { rate: 0.5 }, batchnorm: { momentum: 0.5 } });
  const c = run(3, { ...base, widths: [128] });
  assert.equal(describeKey(a), describeKey(b));
  assert.notEqual(describeKey(a), describeKey(c));
  assert.equal(describeKey({ id: 4, kind: "script", config: {} }), null);
  const infos = layerInfos(
    [a, c],
    new Map([
      [
        describeKey(a),
        { bn_layers: [{ name: "blocks.0.bn", module: "BatchNorm1d", after: "Dropout" }] },
      ],
    ]),
  );
  assert.equal(infos.get(1).get("blocks.0.bn").after, "Dropout");
  assert.equal(infos.get(3).size, 0); // not described: the bare name
});
