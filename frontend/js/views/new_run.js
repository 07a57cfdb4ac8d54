// Starting an experiment without leaving the runs table: the form in a drawer beside the table
// (one click on "New experiment", or a study link /?preset=ID), and, while there are no runs,
// a short welcome that says what bnlab measures and offers the studies to start from.

import * as api from "../lib/api.js";
import { presetLabel, presetList, splitFormulas } from "../data/presets.js";
import { el, notice } from "../lib/dom.js";
import { createSubmitForm } from "./submit.js";

/**
 * The drawer with the submit form. Returns {element, open(presetId?), close(), toggle(), isOpen()}.
 * `onSubmitted(created)` runs after a run or sweep was queued (the drawer stays open with the
 * result, the table beside it shows the new rows).
 */
export function newRunDrawer({ onSubmitted, onToggle = () => {} }) {
  const { form, choosePreset } = createSubmitForm({ onSubmitted });
  const closeButton = el("button", {
    type: "button",
    class: "icon drawer-close",
    "aria-label": "close",
    text: "×",
  });
  const element = el(
    "aside",
    { class: "drawer", hidden: true, "aria-label": "New experiment" },
    el("div", { class: "drawer-head" }, el("h2", { text: "New experiment" }), closeButton),
    form,
  );
  const isOpen = () => !element.hidden;
  const setOpen = (on) => {
    element.hidden = !on;
    document.body.classList.toggle("drawer-open", on);
    onToggle(on);
  };
  const open = (presetId = null) => {
    setOpen(true);
    if (presetId) choosePreset(presetId);
  };
  const close = () => setOpen(false);
  closeButton.addEventListener("click", close);
  element.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
  return { element, open, close, toggle: () => setOpen(!isOpen()), isOpen };
}

function firstSentence(text) {
  const plain = splitFormulas(text).plain;
  const end = plain.search(/[?.](\s|$)/);
  return end > 0 ? plain.slice(0, end + 1) : plain;
}

function studyList(onPreset) {
  const list = el(
    "ul",
    { class: "study-list" },
    el("li", { class: "hint", text: "loading the studies…" }),
  );
  api
    .presetsCached()
    .then((data) => {
      list.replaceChildren(
        ...presetList(data).map((p) =>
          el(
            "li",
            {},
            el("button", {
              type: "button",
              class: "link",
              text: presetLabel(p),
              onclick: () => onPreset(p.id),
            }),
            el("span", { class: "study-question", text: ` — ${firstSentence(p.question)}` }),
          ),
        ),
      );
    })
    .catch((exc) => list.replaceChildren(notice(`studies: ${exc.message}`, "warn")));
  return list;
}

/** The welcome shown while the server has no run at all. */
export function emptyState({ onNew, onPreset }) {
  return el(
    "section",
    { class: "panel empty-state" },
    el("h2", { text: "No runs yet" }),
    el("p", {
      text:
        "bnlab trains networks and measures how Dropout and BatchNorm interact: whether the " +
        "variance a BN layer sees at inference matches the one it learned in training (the variance shift), " +
        "and what that costs in accuracy. Each run gets a verdict in words and what to do about it.",
    }),
    el(
      "p",
      {},
      el("button", {
        type: "button",
        class: "primary",
        text: "Create your first run",
        onclick: onNew,
      }),
      " or start from one of the studies below (each is a ready sweep with the question it answers).",
    ),
    studyList(onPreset),
    el("p", {
      class: "hint",
      text:
        "From your own training loop: bnlab.init(...) and run.watch(model) in the " +
        "script stream its runs here (the SDK, see the README).",
    }),
  );
}
