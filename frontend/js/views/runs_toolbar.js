// The runs table's toolbar: search and filters, the column picker, group-by, and the bulk
// actions on the selected runs. Every choice lives in the URL (lib/router.js).

import * as api from "../lib/api.js";
import { NAMED, STATUSES, columnsFrom } from "../data/runs.js";
import { plural } from "../data/format.js";
import { el, notice } from "../lib/dom.js";
import { compareUrl, navigate, param, setParams } from "../lib/router.js";

export const currentColumns = () => columnsFrom(param("cols", ""));

export function currentFilters() {
  const sweep = param("sweep", "");
  return {
    status: param("status"),
    tag: param("tag"),
    sweep: /^\d+$/.test(sweep) ? sweep : null,
    q: param("q"),
  };
}

/** Text search, status, tag and sweep: applied a moment after the last keystroke. */
export function filterBar(onApply) {
  const status = el(
    "select",
    { name: "status", "aria-label": "status" },
    el("option", { value: "", text: "any status" }),
    STATUSES.map((s) => el("option", { value: s, text: s })),
  );
  const tag = el("input", {
    type: "search",
    name: "tag",
    placeholder: "exact tag",
    "aria-label": "tag",
    size: 10,
  });
  const sweep = el("input", {
    type: "search",
    name: "sweep",
    placeholder: "sweep id",
    inputmode: "numeric",
    "aria-label": "sweep",
    size: 7,
  });
  const text = el("input", {
    type: "search",
    name: "q",
    placeholder: "search names and tags",
    "aria-label": "search",
  });
  status.value = param("status", "");
  tag.value = param("tag", "");
  sweep.value = param("sweep", "");
  text.value = param("q", "");
  let timer = null;
  const apply = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      setParams({
        status: status.value,
        tag: tag.value.trim(),
        sweep: sweep.value.trim(),
        q: text.value.trim(),
        page: null,
      });
      onApply();
    }, 250);
  };
  for (const node of [status, tag, sweep, text]) node.addEventListener("input", apply);
  return el("div", { class: "filters" }, text, status, tag, sweep);
}

/** Any named column, summary value or config field as a column (known: the fields seen). */
export function columnPicker(known, onChange) {
  const chosen = new Set(currentColumns());
  const search = el("input", {
    type: "search",
    placeholder: "filter fields",
    "aria-label": "filter columns",
  });
  const list = el("div", { class: "column-list" });
  const choices = [
    ...Object.keys(NAMED).map((k) => [k, NAMED[k].label]),
    ...known.summary.filter((k) => !NAMED[k]).map((k) => [k, k]),
    ...known.config.map((k) => [k, k]),
  ];
  for (const [key, label] of choices) {
    list.append(
      el(
        "label",
        { class: "column-option", dataset: { key } },
        el("input", {
          type: "checkbox",
          name: "col",
          value: key,
          checked: chosen.has(key),
          onchange: (e) => {
            const cols = currentColumns().filter((c) => c !== key);
            if (e.target.checked) cols.push(key);
            setParams({ cols: cols.join(",") });
            onChange();
          },
        }),
        ` ${label}`,
      ),
    );
  }
  search.addEventListener("input", () => {
    const q = search.value.toLowerCase();
    for (const opt of list.children) opt.hidden = !opt.dataset.key.toLowerCase().includes(q);
  });
  return el(
    "details",
    { class: "column-picker" },
    el("summary", { text: "Columns" }),
    el(
      "div",
      { class: "column-panel" },
      search,
      el("button", {
        type: "button",
        text: "defaults",
        onclick: () => {
          setParams({ cols: null });
          onChange();
        },
      }),
      list,
    ),
  );
}

/** Group the table by any config field: one collapsible row per value with n, mean ± sd. */
export function groupPicker(known, onChange) {
  const select = el(
    "select",
    { name: "group", "aria-label": "group by" },
    el("option", { value: "", text: "no grouping" }),
    known.config
      .filter((k) => !/\.(name|tags)$/.test(k))
      .map((k) => el("option", { value: k, text: k.replace(/^config\./, "") })),
  );
  const current = param("group", "");
  if (current && ![...select.options].some((o) => o.value === current)) {
    select.append(el("option", { value: current, text: current.replace(/^config\./, "") }));
  }
  select.value = current;
  select.addEventListener("change", () => {
    setParams({ group: select.value, page: null });
    onChange();
  });
  return el("label", { class: "inline" }, "group by ", select);
}

/**
 * Compare, sweep view, tag, untag, delete and clear for the selected runs (`selected`: a Set of
 * ids kept across views). Returns {bar, update}: update() after the selection changed.
 */
export function bulkBar(selected, { onChanged, redraw }) {
  const message = el("div", { class: "bulk-message", "aria-live": "polite" });
  const tagInput = el("input", {
    type: "text",
    name: "bulk-tag",
    placeholder: "tag",
    "aria-label": "tag to add or remove",
    size: 8,
  });
  const act = (action) => async () => {
    const ids = [...selected];
    if (!ids.length) return;
    if (
      action === "delete" &&
      !window.confirm(`Delete ${plural(ids.length, "run")} and their data?`)
    )
      return;
    try {
      const res = await api.bulkRuns(
        ids,
        action,
        action === "delete" ? [] : [tagInput.value.trim()],
      );
      if (action === "delete") for (const id of res.done) selected.delete(id);
      const skipped = res.skipped.length
        ? `; skipped ${res.skipped.map((s) => `#${s.id} (${s.reason})`).join(", ")}`
        : "";
      message.replaceChildren(
        notice(
          `${action}: ${plural(res.done.length, "run")}${skipped}`,
          res.skipped.length ? "warn" : "info",
        ),
      );
      update();
      onChanged();
    } catch (exc) {
      message.replaceChildren(notice(`${action}: ${exc.message}`, "error"));
    }
  };
  const buttons = [
    el("button", { class: "primary", onclick: () => navigate(compareUrl([...selected])) }),
    el("button", {
      text: "Sweep view",
      onclick: () => navigate(`/sweep?runs=${[...selected].join(",")}`),
    }),
    el("button", { text: "Tag", onclick: act("tag") }),
    el("button", { text: "Untag", onclick: act("untag") }),
    el("button", { text: "Delete", class: "danger", onclick: act("delete") }),
    el("button", {
      text: "Clear",
      onclick: () => {
        selected.clear();
        update();
        redraw();
      },
    }),
  ];
  const update = () => {
    buttons[0].textContent = `Compare selected (${selected.size})`;
    for (const b of buttons) b.disabled = selected.size === 0;
  };
  update();
  const bar = el(
    "div",
    { class: "toolbar bulk-bar" },
    buttons.slice(0, 2),
    tagInput,
    buttons.slice(2),
    message,
  );
  return { bar, update };
}
