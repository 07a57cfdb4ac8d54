// The submit form's errors, at the field: a 422's message next to the field its path names
// (a sweep row for grid.*), and a summary at the top of the form listing each problem.

import { ApiError } from "../lib/api.js";
import { FIELDS } from "../data/fields.js";
import { el } from "../lib/dom.js";

// After Submit, the errors may sit far below the fold (or in a closed section): a summary at the
// top of the form lists each one (a link that scrolls to its field) and is scrolled into view.
export function summariseErrors(form, formError) {
  form.querySelector(".form-errors-summary")?.remove();
  const marked = [...form.querySelectorAll(".has-error")];
  const loose = [...formError.children].map((n) => n.textContent);
  if (!marked.length && !loose.length) return;
  const items = [
    ...marked.map((node) => {
      const label = node.dataset.path ?? node.querySelector("label")?.textContent ?? "field";
      const msg = node.querySelector(".field-error")?.textContent ?? "";
      return el(
        "li",
        {},
        el("a", {
          href: "#",
          text: `${label}: ${msg}`,
          onclick: (e) => {
            e.preventDefault();
            node.closest("details")?.setAttribute("open", "");
            node.scrollIntoView({ block: "center" });
            node.querySelector("input, select, textarea")?.focus();
          },
        }),
      );
    }),
    ...loose.map((text) => el("li", { text })),
  ];
  const summary = el(
    "div",
    { class: "notice notice-error form-errors-summary", role: "alert", tabindex: "-1" },
    el("strong", {
      text: `${items.length} problem${items.length === 1 ? "" : "s"} to fix before this can run:`,
    }),
    el("ul", {}, items),
  );
  form.prepend(summary);
  for (const node of marked) node.closest("details")?.setAttribute("open", "");
  summary.scrollIntoView({ block: "start" });
  summary.focus({ preventScroll: true });
}

export function clearErrors(form, formError) {
  form.querySelector(".form-errors-summary")?.remove();
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll(".has-error")) node.classList.remove("has-error");
  formError.textContent = "";
}

// The closest element for a dotted path: the field itself, else its nearest listed parent
// ("model.block.2" → model.block), else a sweep row ("grid.model.dropout.rate").
function fieldFor(form, path) {
  const parts = path.split(".");
  if (parts[0] === "grid") {
    const key = parts.slice(1).join(".");
    for (const r of form.querySelectorAll(".sweep-row")) {
      if (key === r.dataset.path || key.startsWith(`${r.dataset.path}.`)) return r;
    }
  }
  for (let n = parts.length; n > 0; n -= 1) {
    const node = form.querySelector(`[data-path="${CSS.escape(parts.slice(0, n).join("."))}"]`);
    if (node && node.querySelector(".field-error")) return node;
  }
  return null;
}

export function markField(form, formError, path, msg) {
  // Model-level validators report at the parent ("model") and name the field in the message.
  const named = FIELDS.find((f) => f.path.startsWith(path) && String(msg).includes(f.path));
  const node = fieldFor(form, named ? named.path : path);
  if (!node) {
    formError.append(el("div", { text: path ? `${path}: ${msg}` : msg }));
    return;
  }
  node.classList.add("has-error");
  const box = node.querySelector(".field-error");
  box.textContent = box.textContent ? `${box.textContent}; ${msg}` : msg;
}

// A 422's detail: FastAPI's [{loc, msg}], or {field, message}, or "field: message".
export function errorItems(detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => ({
      loc: (d.loc ?? []).map(String),
      msg: d.msg ?? d.message ?? String(d),
    }));
  }
  if (detail && typeof detail === "object") {
    return [
      {
        loc: String(detail.field ?? detail.loc ?? "").split("."),
        msg: detail.message ?? detail.msg,
      },
    ];
  }
  const match = /^([A-Za-z_][\w.]*): (.*)$/s.exec(String(detail ?? ""));
  return match ? [{ loc: match[1].split("."), msg: match[2] }] : [{ loc: [], msg: String(detail) }];
}

export function showErrors(form, formError, exc, { field, sweep } = {}) {
  if (!(exc instanceof ApiError) || exc.status !== 422) {
    if (field) markField(form, formError, field, exc.message);
    else formError.append(el("div", { text: exc.message }));
    return;
  }
  for (const { loc, msg } of errorItems(exc.detail)) {
    let parts = loc[0] === "body" ? loc.slice(1) : loc;
    if (sweep || parts[0] === "base") parts = parts[0] === "base" ? parts.slice(1) : parts;
    markField(form, formError, parts.join("."), msg);
  }
}
