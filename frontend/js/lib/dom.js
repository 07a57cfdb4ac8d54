// Small DOM helpers and the few widgets every view shares. Everything a user or the server
// controls goes in as text nodes (createElement + textContent), never through innerHTML.

import { isTerminal, unplanned } from "../data/runs.js";

export { isTerminal, unplanned };

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "value" || key === "checked" || key === "selected") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  appendAll(node, children);
  return node;
}

export function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// replaceChildren that skips null/false (a panel that is not there), as el() does.
export function setChildren(node, ...children) {
  node.replaceChildren();
  return appendAll(node, children);
}

export function statusBadge(status) {
  return el("span", { class: `status status-${status}`, text: status });
}

export function progressBar(progress) {
  const value = Math.max(0, Math.min(1, Number(progress) || 0));
  return el(
    "span",
    {
      class: "progress",
      title: `${(100 * value).toFixed(0)}%`,
      role: "progressbar",
      "aria-valuenow": (100 * value).toFixed(0),
    },
    el("span", { class: "progress-fill", style: { width: `${(100 * value).toFixed(1)}%` } }),
  );
}

// A live run's progress: a bar and its step (a script run without total_steps: the step only).
export function liveProgress(run) {
  if (isTerminal(run.status)) return null;
  return el(
    "span",
    { class: "live-progress" },
    unplanned(run) ? null : progressBar(run.progress),
    el("span", { class: "step", text: `step ${run.step ?? 0}` }),
  );
}

export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function notice(text, kind = "info") {
  return el("div", { class: `notice notice-${kind}`, text });
}

/**
 * A collapsible panel (<details>) for what many runs make long (the legend, per-run tables):
 * `count` goes in its heading, `search` adds a box that hides the `rows` whose text does not
 * contain what is typed. Returns the <details> element.
 */
export function fold({ title, count = null, open = false, cls = "", search = null }, ...content) {
  const heading = el(
    "summary",
    {},
    el("span", { class: "fold-title", text: title }),
    count === null ? null : el("span", { class: "fold-count", text: ` (${count})` }),
  );
  const box = search ? searchBox(search) : null;
  return el("details", { class: `panel fold ${cls}`.trim(), open }, heading, box, ...content);
}

function searchBox({ placeholder = "search", rows }) {
  const input = el("input", {
    type: "search",
    class: "fold-search",
    placeholder,
    "aria-label": placeholder,
  });
  input.addEventListener("input", () => {
    const q = input.value.trim().toLowerCase();
    for (const row of rows()) row.hidden = Boolean(q) && !row.textContent.toLowerCase().includes(q);
  });
  return input;
}

// The swatch of a run's colour.
export function swatch(colour) {
  return el("span", { class: "swatch", style: { background: colour }, "aria-hidden": "true" });
}
