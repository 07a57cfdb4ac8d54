// frontend/js/data/presets.js: plain words first, formulas behind a fold; and the shipped
// presets (backend/presets/*.json) keep internal field names out of their plain words.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { splitFormulas } from "../../../frontend/js/data/presets.js";

test("the text after 'In formulas:' is folded away", () => {
  assert.deepEqual(splitFormulas("Plain words.\n\nIn formulas: a = b / c."), {
    plain: "Plain words.",
    formulas: "a = b / c.",
  });
  assert.deepEqual(splitFormulas("Only plain."), { plain: "Only plain.", formulas: null });
});

const PRESETS = new URL("../../../backend/presets/", import.meta.url);
// snake_case identifiers (shift_by_layer, test_acc_eval), exponent carets, doc section marks
const INTERNAL = /\b[a-z]+(_[a-z0-9]+){1,}\b(?!=)|\^|§/;

test("every shipped preset says its question, look-at and expectation in plain words", () => {
  const files = readdirSync(PRESETS).filter((f) => f.endsWith(".json"));
  assert.ok(files.length >= 10);
  for (const file of files) {
    const preset = JSON.parse(readFileSync(new URL(file, PRESETS), "utf8"));
    for (const field of ["question", "look_at", "expected"]) {
      const { plain } = splitFormulas(preset[field]);
      const allowed = plain.replace(
        /model\.[a-z_.]+|dropout_at|head\.bn|stage\d\.unit\d\.bn\d|blocks\.\d\.bn|worker\/engine\/predict\.py|--folded|model\.npz|x\.npy/g,
        "",
      );
      assert.doesNotMatch(allowed, INTERNAL, `${file} ${field}: ${plain}`);
    }
  }
});
