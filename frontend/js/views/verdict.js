// The verdict in words (data/verdict.js decides, this draws): the largest shift against its
// noise floor and prediction, the accuracy it costs, and what to do, each remedy linked to the
// study (a preset) that shows it. On the run page for one run, on the compare view over all.

import { presetsCached } from "../lib/api.js";
import { el } from "../lib/dom.js";
import { presetLabel, presetList } from "../data/presets.js";
import { accuracyLine, advice, headline, layerSentence } from "../data/verdict.js";

const RUNS_LISTED = 6;

// A study's title once the presets are known (the link works before that: its id names it).
async function studyTitles() {
  try {
    return new Map(presetList(await presetsCached()).map((p) => [p.id, presetLabel(p)]));
  } catch {
    return new Map();
  }
}

function studyLink(id, titles) {
  return el("a", {
    class: "study-link",
    href: `/?preset=${encodeURIComponent(id)}`,
    "data-link": true,
    title: "open the study's preset in the new-experiment form",
    text: `study: ${titles.get(id) ?? id}`,
  });
}

function runList(ids) {
  const shown = ids
    .slice(0, RUNS_LISTED)
    .map((id) => `#${id}`)
    .join(", ");
  const more = ids.length > RUNS_LISTED ? ` +${ids.length - RUNS_LISTED} more` : "";
  return el("span", {
    class: "advice-runs",
    text: ` (${ids.length === 1 ? "run" : "runs"} ${shown}${more})`,
  });
}

function adviceList(items, titles, single) {
  if (!items.length) return null;
  return el(
    "ul",
    { class: "advice" },
    items.map((item) =>
      el(
        "li",
        { dataset: { advice: item.id } },
        el("strong", { text: item.text }),
        single ? null : runList(item.runs),
        " ",
        el("span", { class: "advice-detail", text: item.detail }),
        " ",
        studyLink(item.study, titles),
      ),
    ),
  );
}

/**
 * The verdict panel for the runs' facts (data/verdict.js runFacts). `single`: the run page.
 * @returns {Promise<HTMLElement>}
 */
export async function verdictPanel(facts, { single = false } = {}) {
  const titles = await studyTitles();
  const items = advice(facts);
  const first = facts[0];
  const lines = single
    ? [
        first?.worst
          ? `Largest shift: ${layerSentence(first.worst)}.`
          : "No BN layer shift measured yet.",
        first ? accuracyLine(first) : "",
      ]
    : [headline(facts)];
  return el(
    "section",
    { class: "panel verdict", dataset: { level: single ? (first?.level ?? "unknown") : "" } },
    el("h2", { text: "Verdict" }),
    lines.filter(Boolean).map((text) => el("p", { class: "verdict-line", text })),
    items.length ? el("h3", { text: "What to do" }) : null,
    adviceList(items, titles, single),
  );
}

// A table cell with a layer's verdict: its level as a class (colour), the sentence as text.
export function verdictCell(verdict) {
  const pred = verdict.prediction ? `; ${verdict.prediction.text}` : "";
  return el("td", {
    class: `verdict-cell verdict-${verdict.level}`,
    dataset: { col: "verdict" },
    text: `${verdict.text}${pred}`,
  });
}
