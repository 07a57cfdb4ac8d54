// A study (preset) as the story and the form show it: its question, where to look and what to
// expect in plain words, the formulas and field names behind a fold (data/presets.js).

import { splitFormulas } from "../data/presets.js";
import { el } from "../lib/dom.js";

function part(cls, label, text) {
  return el("p", { class: cls }, el("strong", { text: `${label} ` }), text);
}

/** The question, look-at and expected texts, then one fold with every formula they hold. */
export function presetTexts(preset) {
  const parts = [
    ["story-question", "Question.", preset.question],
    ["story-look", "Look at.", preset.look_at],
    ["story-expected", "Expected.", preset.expected],
  ].filter(([, , text]) => text);
  const split = parts.map(([cls, label, text]) => [cls, label, splitFormulas(text)]);
  const formulas = split.filter(([, , s]) => s.formulas);
  return [
    ...split.map(([cls, label, s]) => part(cls, label, s.plain)),
    formulas.length
      ? el(
          "details",
          { class: "preset-formulas" },
          el("summary", { text: "The formulas" }),
          formulas.map(([, label, s]) => part("formula-text", label, s.formulas)),
        )
      : null,
  ];
}

/** The story's panel for runs `ids` made from `preset` (`outside`: compared runs from elsewhere). */
export function presetPanel(preset, ids, outside) {
  return el(
    "section",
    { class: "panel story-preset", dataset: { preset: preset.id } },
    el("h2", { text: `Study: ${preset.title}` }),
    presetTexts(preset),
    el("p", {
      class: "hint",
      text:
        `Preset ${preset.id}: runs ${ids.map((i) => `#${i}`).join(", ")}` +
        (outside > 0
          ? `; ${outside} compared run${outside === 1 ? " is" : "s are"} from elsewhere.`
          : "."),
    }),
  );
}
