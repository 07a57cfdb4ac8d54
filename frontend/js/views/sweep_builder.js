// The submit form's sweep builder: values per field (they multiply) and seeds, with the number
// of runs the grid makes shown as it is typed.

import { FIELDS, FIELD_BY_PATH, ParseError, parseSweepValues, parseValue } from "../data/fields.js";
import { el } from "../lib/dom.js";

function guess(text) {
  const t = text.trim();
  if (t === "") return "";
  if (t === "null") return null;
  if (t === "true" || t === "false") return t === "true";
  return Number.isFinite(Number(t)) ? Number(t) : t;
}

// A row's field and its values (a field the form does not know: JSON-ish guesses).
function rowValues(r) {
  const path = r.querySelector(".sweep-path").value.trim();
  const text = r.querySelector(".sweep-values").value;
  const field = FIELD_BY_PATH[path] ?? { path, type: "json" };
  return {
    path,
    list:
      field.type === "json"
        ? text
            .split(",")
            .map(guess)
            .filter((v) => v !== "")
        : parseSweepValues(field, text),
  };
}

function parseSeeds(input) {
  const text = input.value.trim();
  return text ? parseValue({ type: "intlist" }, text) : null;
}

// Runs the grid makes: the product of each row's value count, times the seeds.
function countRuns(rows, seeds) {
  let n = 1;
  for (const r of rows.children) {
    try {
      const { path, list } = rowValues(r);
      if (path) n *= Math.max(list.length, 1);
    } catch {
      /* an unparsable cell counts once until fixed */
    }
  }
  let s;
  try {
    s = parseSeeds(seeds);
  } catch {
    s = null; // unparsable seeds count once until fixed
  }
  return n * (s ? s.length : 1);
}

// {grid, seeds, errors}: errors name the row (grid.PATH) or "seeds".
function readGrid(rows, seeds) {
  const grid = {};
  const errors = [];
  for (const r of rows.children) {
    try {
      const { path, list } = rowValues(r);
      if (!path) continue;
      if (!list.length) throw new ParseError("give at least one value");
      grid[path] = list;
    } catch (exc) {
      if (!(exc instanceof ParseError)) throw exc;
      errors.push({ path: `grid.${r.dataset.path}`, msg: exc.message });
    }
  }
  let seedList = null;
  try {
    seedList = parseSeeds(seeds);
  } catch (exc) {
    errors.push({ path: "seeds", msg: exc.message });
  }
  return { grid, seeds: seedList, errors };
}

function sweepRow(path, values, onChange) {
  const r = el(
    "div",
    { class: "sweep-row", dataset: { path } },
    el("input", {
      type: "text",
      class: "sweep-path",
      list: "sweep-paths",
      value: path,
      placeholder: "model.dropout.rate",
      "aria-label": "field",
      autocomplete: "off",
    }),
    el("input", {
      type: "text",
      class: "sweep-values",
      value: values,
      placeholder: "0.1, 0.3, 0.5   (lists: 32,32 | 64)",
      "aria-label": "values",
      autocomplete: "off",
    }),
    el("button", {
      type: "button",
      class: "icon",
      title: "remove",
      text: "×",
      onclick: () => {
        r.remove();
        onChange();
      },
    }),
    el("div", { class: "field-error", role: "alert" }),
  );
  r.addEventListener("input", () => {
    r.dataset.path = r.querySelector(".sweep-path").value.trim();
    onChange();
  });
  return r;
}

/** {element, read(), load(grid, seeds), count()}; onChange after every edit. */
export function sweepBuilder(onChange) {
  const rows = el("div", { class: "sweep-rows" });
  const seeds = el("input", {
    type: "text",
    name: "sweep.seeds",
    placeholder: "e.g. 0, 1, 2",
    autocomplete: "off",
  });
  const count = el("span", { class: "sweep-count", "aria-live": "polite" });
  const update = (notify = true) => {
    const n = countRuns(rows, seeds);
    count.textContent = `makes ${n} run${n === 1 ? "" : "s"}`;
    if (notify) onChange();
  };
  const addRow = (path = "", values = "") => rows.append(sweepRow(path, values, update));
  const element = el(
    "fieldset",
    { class: "section sweep" },
    el("legend", { text: "Sweep (optional)" }),
    el("p", {
      class: "hint",
      text: "Each field's values multiply: the grid × seeds becomes one run per cell.",
    }),
    el(
      "datalist",
      { id: "sweep-paths" },
      FIELDS.filter((f) => f.type !== "text").map((f) => el("option", { value: f.path })),
    ),
    rows,
    el(
      "div",
      { class: "sweep-foot" },
      el("button", {
        type: "button",
        text: "+ field",
        onclick: () => {
          addRow();
          update();
        },
      }),
      el("label", { class: "inline", dataset: { path: "seeds" } }, "seeds ", seeds),
      count,
    ),
  );
  seeds.addEventListener("input", () => update());
  const load = (grid, seedList) => {
    rows.replaceChildren();
    for (const [path, list] of Object.entries(grid || {})) {
      const listy = list.some(Array.isArray);
      addRow(
        path,
        list
          .map((v) => (Array.isArray(v) ? v.join(",") : v === null ? "null" : String(v)))
          .join(listy ? " | " : ", "),
      );
    }
    seeds.value = seedList ? seedList.join(", ") : "";
    update();
  };
  update(false); // the form is not built yet: it reads the count itself
  return { element, read: () => readGrid(rows, seeds), load, count: () => countRuns(rows, seeds) };
}
