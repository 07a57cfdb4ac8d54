// Small DOM helpers. Everything a user or the server controls goes in as text nodes
// (createElement + textContent), never through innerHTML.

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

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

export function pct(value) {
  return typeof value === "number" ? `${(100 * value).toFixed(1)}%` : "–";
}

// crashed: a script run (the bnlab SDK) whose client went silent
export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "diverged", "crashed"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

export function statusBadge(status) {
  return el("span", { class: `status status-${status}`, text: status });
}

// A script run whose loop did not say its length (bnlab.init without total_steps): its
// progress has no denominator, so only its step is shown, never a made-up fraction.
export function unplanned(run) {
  return run.kind === "script" && run.total_steps == null;
}

export function progressBar(progress) {
  const value = Math.max(0, Math.min(1, Number(progress) || 0));
  return el(
    "span",
    { class: "progress", title: `${(100 * value).toFixed(0)}%`, role: "progressbar",
      "aria-valuenow": (100 * value).toFixed(0) },
    el("span", { class: "progress-fill", style: { width: `${(100 * value).toFixed(1)}%` } }),
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

// Plotly renders a subset of HTML in names and titles; escaping keeps user text literal.
export function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
