// The submit form: seeded from /api/presets, edits the ExperimentConfig fields of fields.js,
// builds a sweep (values per field; shows how many runs it makes) and shows a 422's message
// next to the field its path names.

import * as api from "./api.js";
import { el, notice } from "./dom.js";
import {
  BLOCK_LAYERS, FIELD_BY_PATH, FIELDS, ParseError, SECTIONS, formatValue, getDotted,
  parseSweepValues, parseValue, setBlockLayers, setDotted,
} from "./fields.js";
import { defaultsOf, fieldOptions, loadSchemas } from "./schema.js";
import { runUrl } from "./state.js";

const DEFAULT_BASE = { name: "experiment", tags: [] };

// ---- preset handling -------------------------------------------------------------------

// Presets may be a config or a sweep; accept the shapes the API may use.
export function presetParts(preset) {
  const sweep = preset.sweep ?? (preset.grid ? preset : null);
  const base = sweep?.base ?? preset.config ?? preset.base ?? DEFAULT_BASE;
  return { base, grid: sweep?.grid ?? {}, seeds: sweep?.seeds ?? null };
}

function presetLabel(preset) {
  return preset.title ?? preset.name ?? preset.id ?? "preset";
}

function presetList(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.presets)) return data.presets;
  if (data && Array.isArray(data.data)) return data.data;
  if (data && typeof data === "object") {
    return Object.entries(data).map(([id, p]) => ({ id, ...p }));
  }
  return [];
}

// ---- one field ---------------------------------------------------------------------------

function blockWidget(field) {
  return el("ol", { class: "block-order", dataset: { path: field.path } });
}

// The block's layers (BLOCK_LAYERS, from the served schema) as movable, optional items.
function fillBlockWidget(list) {
  const move = (item, delta) => {
    const items = [...list.children];
    const target = items.indexOf(item) + delta;
    if (target < 0 || target >= items.length) return;
    if (delta < 0) list.insertBefore(item, items[target]);
    else list.insertBefore(items[target], item);
  };
  const item = (kind) => {
    const li = el("li", { dataset: { kind } });
    const include = el("input", { type: "checkbox", checked: true, "aria-label": `include ${kind}` });
    if (kind === "main") include.disabled = true;
    li.append(
      include,
      el("span", { class: "block-name", text: kind === "main" ? "linear" : kind }),
      el("button", { type: "button", class: "icon", title: "move up", text: "↑", onclick: () => move(li, -1) }),
      el("button", { type: "button", class: "icon", title: "move down", text: "↓", onclick: () => move(li, 1) }),
    );
    return li;
  };
  list.replaceChildren(item("main"), ...BLOCK_LAYERS.map(item));
}

function setBlock(list, block, arch) {
  const main = arch === "cnn" ? "conv" : "linear";
  const order = [...block.map((k) => (k === "linear" || k === "conv" ? "main" : k))];
  for (const kind of ["main", ...BLOCK_LAYERS]) if (!order.includes(kind)) order.push(kind);
  for (const kind of order) {
    const li = list.querySelector(`li[data-kind="${kind}"]`);
    li.querySelector("input").checked = kind === "main" || block.includes(kind);
    if (kind === "main") li.querySelector(".block-name").textContent = main;
    list.append(li);
  }
}

function readBlock(list) {
  return [...list.children]
    .filter((li) => li.querySelector("input").checked)
    .map((li) => li.querySelector(".block-name").textContent);
}

function fieldWidget(field) {
  // options arrive with the served schema (setOptions)
  if (field.type === "select") return el("select", { name: field.path, id: `f-${field.path}` });
  if (field.type === "bool") return el("input", { type: "checkbox", name: field.path, id: `f-${field.path}` });
  if (field.type === "block") return blockWidget(field);
  const numeric = field.type === "int" || field.type === "float";
  return el("input", { type: "text", name: field.path, id: `f-${field.path}`, autocomplete: "off",
    inputmode: numeric ? "decimal" : null, spellcheck: "false" });
}

function fieldRow(field) {
  const widget = fieldWidget(field);
  return el("div", { class: `field field-${field.type}`, dataset: { path: field.path } },
    el("label", { for: `f-${field.path}`, text: field.label }),
    widget,
    el("div", { class: "field-error", role: "alert" }));
}

// ---- the form ------------------------------------------------------------------------------

export function submitPanel({ onSubmitted } = {}) {
  let base = structuredClone(DEFAULT_BASE);
  const formError = el("div", { class: "form-error", role: "alert" });
  const result = el("div", { class: "form-result" });
  const presetSelect = el("select", { name: "preset", id: "f-preset" },
    el("option", { value: "", text: "defaults" }));
  const presetNote = el("p", { class: "preset-note" });
  const presets = [];

  const form = el("form", { class: "submit-form", novalidate: true });
  const head = el("div", { class: "form-head" },
    el("div", { class: "field" }, el("label", { for: "f-preset", text: "start from" }), presetSelect),
    el("div", { class: "field field-wide", dataset: { path: "name" } },
      el("label", { for: "f-name", text: "name" }),
      el("input", { type: "text", name: "name", id: "f-name", autocomplete: "off" }),
      el("div", { class: "field-error", role: "alert" })),
    el("div", { class: "field field-wide", dataset: { path: "tags" } },
      el("label", { for: "f-tags", text: "tags (comma separated)" }),
      el("input", { type: "text", name: "tags", id: "f-tags", autocomplete: "off" }),
      el("div", { class: "field-error", role: "alert" })));
  const sections = SECTIONS.map((s) =>
    el("fieldset", { class: "section" }, el("legend", { text: s.title }), s.fields.map(fieldRow)));
  const sweep = sweepBuilder(() => updateButton());
  const uploadInput = el("input", { type: "file", accept: ".npz,.csv", name: "upload-file" });
  const submitButton = el("button", { type: "submit", class: "primary", text: "Submit run" });

  form.append(presetNote, head, el("div", { class: "sections" }, sections),
    el("div", { class: "upload-row" }, el("label", { text: "upload a dataset (.npz / .csv)" }), uploadInput),
    sweep.element, formError, el("div", { class: "form-actions" }, submitButton), result);

  const input = (path) => form.querySelector(`[name="${path}"]`);
  const archSelect = input("model.arch");
  const blockList = form.querySelector('ol.block-order');

  function fill(config) {
    base = structuredClone(config);
    input("name").value = config.name ?? "";
    input("tags").value = (config.tags ?? []).join(", ");
    for (const field of FIELDS) {
      const value = getDotted(config, field.path);
      if (field.type === "block") continue;
      const node = input(field.path);
      if (field.type === "bool") node.checked = value ?? node.checked;
      else if (value !== undefined) node.value = formatValue(value);
    }
    setBlock(blockList, getDotted(config, "model.block") ?? ["linear", "dropout", "batchnorm", "activation"],
      archSelect.value);
  }

  function read() {
    const config = structuredClone(base);
    const errors = [];
    config.name = input("name").value.trim() || "experiment";
    config.tags = input("tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    for (const field of FIELDS) {
      try {
        let value;
        if (field.type === "block") value = readBlock(blockList);
        else if (field.type === "bool") value = input(field.path).checked;
        else value = parseValue(field, input(field.path).value);
        setDotted(config, field.path, value);
      } catch (exc) {
        if (!(exc instanceof ParseError)) throw exc;
        errors.push({ path: field.path, msg: exc.message });
      }
    }
    return { config, errors };
  }

  function updateButton() {
    const n = sweep.count();
    submitButton.textContent = n > 1 ? `Submit sweep (${n} runs)` : "Submit run";
  }

  archSelect.addEventListener("change", () => setBlock(blockList, readBlock(blockList), archSelect.value));
  presetSelect.addEventListener("change", () => {
    const preset = presets[Number(presetSelect.value)];
    const parts = preset ? presetParts(preset) : { base: DEFAULT_BASE, grid: {}, seeds: null };
    fill(parts.base);
    sweep.load(parts.grid, parts.seeds);
    presetNote.replaceChildren(...(preset ? [
      el("strong", { text: preset.question ?? "" }),
      preset.look_at ? el("div", { text: `Look at: ${preset.look_at}` }) : null,
      preset.expected ? el("div", { text: `Expected: ${preset.expected}` }) : null,
    ].filter(Boolean) : []));
    updateButton();
  });
  uploadInput.addEventListener("change", async () => {
    if (!uploadInput.files.length) return;
    clearErrors(form, formError);
    try {
      const up = await api.uploadDataset(uploadInput.files[0]);
      input("dataset.name").value = "upload";
      input("dataset.upload_id").value = up.upload_id ?? up.id;
    } catch (exc) {
      showErrors(form, formError, exc, { field: "dataset.upload_id" });
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, formError);
    result.replaceChildren();
    const { config, errors } = read();
    const grid = sweep.read();
    errors.push(...grid.errors);
    if (errors.length) {
      errors.forEach((e) => markField(form, formError, e.path, e.msg));
      // The client's checks must not hide the server's: the config is complete (a field that
      // did not parse keeps its last valid value), so POST /api/describe validates the rest
      // without storing anything, and its 422 is shown beside the client's errors.
      try {
        await api.describe(config);
      } catch (exc) {
        if (exc instanceof api.ApiError && exc.status === 422) showErrors(form, formError, exc);
      }
      summariseErrors(form, formError);
      return;
    }
    submitButton.disabled = true;
    try {
      const isSweep = sweep.count() > 1 || Object.keys(grid.grid).length > 0 || grid.seeds;
      const created = isSweep
        ? await api.createSweep({ base: config, grid: grid.grid, seeds: grid.seeds })
        : await api.createRun(config);
      result.append(submittedNote(created));
      if (onSubmitted) onSubmitted(created);
    } catch (exc) {
      showErrors(form, formError, exc, { sweep: sweep.count() > 1 });
      summariseErrors(form, formError);
    } finally {
      submitButton.disabled = false;
    }
  });

  // Live size of the model being edited (POST /api/describe), a moment after the last edit.
  const modelSize = el("p", { class: "model-size", "aria-live": "polite" });
  form.querySelector(".sections").after(modelSize);
  let sizeTimer = null, sizeSeq = 0;
  const showSize = () => {
    const { config, errors } = read();
    const seq = ++sizeSeq;
    if (errors.length) { modelSize.textContent = "model: fix the fields marked above"; return; }
    api.describe(config).then((d) => {
      if (seq !== sizeSeq) return;
      modelSize.textContent = `model: ${d.params.toLocaleString("en-US")} parameters, ` +
        `${d.bn_layers.length} BN layers`;
    }).catch((exc) => {
      if (seq === sizeSeq) modelSize.textContent = `model: ${exc.message}`;
    });
  };
  const sizeSoon = () => { clearTimeout(sizeTimer); sizeTimer = setTimeout(showSize, 250); };
  form.addEventListener("input", sizeSoon);
  form.addEventListener("change", sizeSoon);

  // Options and defaults are the server's (the served JSON schema); presets load after them,
  // so a preset never fills a select that has no options yet.
  loadSchemas().then((schemas) => {
    setBlockLayers(fieldOptions(schemas, "model.block"));
    fillBlockWidget(blockList);
    for (const field of FIELDS) {
      if (field.type !== "select") continue;
      input(field.path).replaceChildren(
        ...fieldOptions(schemas, field.path).map((o) => el("option", { value: o, text: o || "(none)" })));
    }
    fill({ ...DEFAULT_BASE, ...defaultsOf(schemas) });
    sizeSoon();
    form.dataset.schema = "ready";
    return api.presets();
  }).then((data) => {
    for (const [i, preset] of presetList(data).entries()) {
      presets.push(preset);
      presetSelect.append(el("option", { value: String(i), text: presetLabel(preset) }));
    }
  }).catch((exc) => presetNote.replaceChildren(notice(`form setup: ${exc.message}`, "warn")));

  return form;
}

function submittedNote(created) {
  const runs = created.runs ?? [created];
  const note = el("div", { class: "notice notice-ok" },
    runs.length > 1 ? `Sweep #${created.id} queued: ${runs.length} runs ` : "Queued ");
  for (const run of runs.slice(0, 12)) {
    note.append(el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id}` }), " ");
  }
  return note;
}

// ---- sweep builder ---------------------------------------------------------------------------

function sweepBuilder(onChange) {
  const rows = el("div", { class: "sweep-rows" });
  const seeds = el("input", { type: "text", name: "sweep.seeds", placeholder: "e.g. 0, 1, 2",
    autocomplete: "off" });
  const count = el("span", { class: "sweep-count", "aria-live": "polite" });
  const paths = el("datalist", { id: "sweep-paths" },
    FIELDS.filter((f) => f.type !== "text").map((f) => el("option", { value: f.path })));

  const row = (path = "", values = "") => {
    const r = el("div", { class: "sweep-row", dataset: { path } },
      el("input", { type: "text", class: "sweep-path", list: "sweep-paths", value: path,
        placeholder: "model.dropout.rate", "aria-label": "field", autocomplete: "off" }),
      el("input", { type: "text", class: "sweep-values", value: values,
        placeholder: "0.1, 0.3, 0.5   (lists: 32,32 | 64)", "aria-label": "values", autocomplete: "off" }),
      el("button", { type: "button", class: "icon", title: "remove", text: "×",
        onclick: () => { r.remove(); update(); } }),
      el("div", { class: "field-error", role: "alert" }));
    r.addEventListener("input", () => {
      r.dataset.path = r.querySelector(".sweep-path").value.trim();
      update();
    });
    rows.append(r);
    return r;
  };

  const element = el("fieldset", { class: "section sweep" },
    el("legend", { text: "Sweep (optional)" }),
    el("p", { class: "hint", text: "Each field's values multiply: the grid × seeds becomes one run per cell." }),
    paths, rows,
    el("div", { class: "sweep-foot" },
      el("button", { type: "button", text: "+ field", onclick: () => { row(); update(); } }),
      el("label", { class: "inline", dataset: { path: "seeds" } }, "seeds ", seeds), count));
  seeds.addEventListener("input", () => update());

  function values(r) {
    const path = r.querySelector(".sweep-path").value.trim();
    const text = r.querySelector(".sweep-values").value;
    const field = FIELD_BY_PATH[path] ?? { path, type: "json" };
    return { path, list: field.type === "json" ? text.split(",").map(guess).filter((v) => v !== "") 
      : parseSweepValues(field, text) };
  }

  function parseSeeds() {
    const text = seeds.value.trim();
    if (!text) return null;
    return parseValue({ type: "intlist" }, text);
  }

  function count_() {
    let n = 1;
    for (const r of rows.children) {
      try {
        const { path, list } = values(r);
        if (path) n *= Math.max(list.length, 1);
      } catch {
        /* an unparsable cell counts once until fixed */
      }
    }
    let s = null;
    try { s = parseSeeds(); } catch { s = null; }
    return n * (s ? s.length : 1);
  }

  function update(notify = true) {
    const n = count_();
    count.textContent = `makes ${n} run${n === 1 ? "" : "s"}`;
    if (notify) onChange();
  }

  function read() {
    const grid = {};
    const errors = [];
    for (const r of rows.children) {
      try {
        const { path, list } = values(r);
        if (!path) continue;
        if (!list.length) throw new ParseError("give at least one value");
        grid[path] = list;
      } catch (exc) {
        if (!(exc instanceof ParseError)) throw exc;
        errors.push({ path: `grid.${r.dataset.path}`, msg: exc.message });
      }
    }
    let seedList = null;
    try { seedList = parseSeeds(); } catch (exc) { errors.push({ path: "seeds", msg: exc.message }); }
    return { grid, seeds: seedList, errors };
  }

  function load(grid, seedList) {
    rows.replaceChildren();
    for (const [path, list] of Object.entries(grid || {})) {
      const listy = list.some(Array.isArray);
      row(path, list.map((v) => (Array.isArray(v) ? v.join(",") : v === null ? "null" : String(v)))
        .join(listy ? " | " : ", "));
    }
    seeds.value = seedList ? seedList.join(", ") : "";
    update();
  }

  update(false); // the form is not built yet: it reads the count itself
  return { element, read, load, count: count_ };
}

function guess(text) {
  const t = text.trim();
  if (t === "") return "";
  if (t === "null") return null;
  if (t === "true" || t === "false") return t === "true";
  return Number.isFinite(Number(t)) ? Number(t) : t;
}

// ---- errors at the field ---------------------------------------------------------------------

// After Submit, the errors may sit far below the fold (or in a closed section): a summary at the
// top of the form lists each one (a link that scrolls to its field) and is scrolled into view.
function summariseErrors(form, formError) {
  form.querySelector(".form-errors-summary")?.remove();
  const marked = [...form.querySelectorAll(".has-error")];
  const loose = [...formError.children].map((n) => n.textContent);
  if (!marked.length && !loose.length) return;
  const items = [
    ...marked.map((node) => {
      const label = node.dataset.path ?? node.querySelector("label")?.textContent ?? "field";
      const msg = node.querySelector(".field-error")?.textContent ?? "";
      return el("li", {}, el("a", { href: "#", text: `${label}: ${msg}`, onclick: (e) => {
        e.preventDefault();
        node.closest("details")?.setAttribute("open", "");
        node.scrollIntoView({ block: "center" });
        node.querySelector("input, select, textarea")?.focus();
      } }));
    }),
    ...loose.map((text) => el("li", { text })),
  ];
  const summary = el("div", { class: "notice notice-error form-errors-summary", role: "alert", tabindex: "-1" },
    el("strong", { text: `${items.length} problem${items.length === 1 ? "" : "s"} to fix before this can run:` }),
    el("ul", {}, items));
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

function markField(form, formError, path, msg) {
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
    return detail.map((d) => ({ loc: (d.loc ?? []).map(String), msg: d.msg ?? d.message ?? String(d) }));
  }
  if (detail && typeof detail === "object") {
    return [{ loc: String(detail.field ?? detail.loc ?? "").split("."), msg: detail.message ?? detail.msg }];
  }
  const match = /^([A-Za-z_][\w.]*): (.*)$/s.exec(String(detail ?? ""));
  return match ? [{ loc: match[1].split("."), msg: match[2] }] : [{ loc: [], msg: String(detail) }];
}

function showErrors(form, formError, exc, { field, sweep } = {}) {
  if (!(exc instanceof api.ApiError) || exc.status !== 422) {
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
