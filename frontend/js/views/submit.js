// The submit form: seeded from a study (/api/presets) or the schema's defaults, edits the
// ExperimentConfig fields of data/fields.js, builds a sweep (values per field; shows how many
// runs it makes), shows the model's size as it is edited, and a 422's message next to the
// field its path names.

import * as api from "../lib/api.js";
import { DEFAULT_BASE, presetLabel, presetList, presetParts } from "../data/presets.js";
import {
  BLOCK_LAYERS,
  FIELDS,
  ParseError,
  SECTIONS,
  formatValue,
  getDotted,
  parseValue,
  setBlockLayers,
  setDotted,
} from "../data/fields.js";
import { defaultsOf, fieldOptions } from "../data/schema.js";
import { el, notice, setChildren } from "../lib/dom.js";
import { runUrl } from "../lib/router.js";
import { clearErrors, markField, showErrors, summariseErrors } from "./form_errors.js";
import { presetTexts } from "./presets.js";
import { sweepBuilder } from "./sweep_builder.js";

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
    const include = el("input", {
      type: "checkbox",
      checked: true,
      "aria-label": `include ${kind}`,
    });
    if (kind === "main") include.disabled = true;
    li.append(
      include,
      el("span", { class: "block-name", text: kind === "main" ? "linear" : kind }),
      el("button", {
        type: "button",
        class: "icon",
        title: "move up",
        text: "↑",
        onclick: () => move(li, -1),
      }),
      el("button", {
        type: "button",
        class: "icon",
        title: "move down",
        text: "↓",
        onclick: () => move(li, 1),
      }),
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
  if (field.type === "bool")
    return el("input", { type: "checkbox", name: field.path, id: `f-${field.path}` });
  if (field.type === "block") return blockWidget(field);
  const numeric = field.type === "int" || field.type === "float";
  return el("input", {
    type: "text",
    name: field.path,
    id: `f-${field.path}`,
    autocomplete: "off",
    inputmode: numeric ? "decimal" : null,
    spellcheck: "false",
  });
}

function fieldRow(field) {
  const widget = fieldWidget(field);
  return el(
    "div",
    { class: `field field-${field.type}`, dataset: { path: field.path } },
    el("label", { for: `f-${field.path}`, text: field.label }),
    widget,
    el("div", { class: "field-error", role: "alert" }),
  );
}

function textField(path, label) {
  return el(
    "div",
    { class: "field field-wide", dataset: { path } },
    el("label", { for: `f-${path}`, text: label }),
    el("input", { type: "text", name: path, id: `f-${path}`, autocomplete: "off" }),
    el("div", { class: "field-error", role: "alert" }),
  );
}

// ---- reading and filling -------------------------------------------------------------------

const input = (form, path) => form.querySelector(`[name="${path}"]`);

function fillForm(form, config) {
  input(form, "name").value = config.name ?? "";
  input(form, "tags").value = (config.tags ?? []).join(", ");
  for (const field of FIELDS) {
    const value = getDotted(config, field.path);
    if (field.type === "block") continue;
    const node = input(form, field.path);
    if (field.type === "bool") node.checked = value ?? node.checked;
    else if (value !== undefined) node.value = formatValue(value);
  }
  setBlock(
    form.querySelector("ol.block-order"),
    getDotted(config, "model.block") ?? ["linear", "dropout", "batchnorm", "activation"],
    input(form, "model.arch").value,
  );
}

// {config, errors}: `base` with every field the form shows; a field that does not parse keeps
// base's value and is named in errors.
function readForm(form, base) {
  const config = structuredClone(base);
  const errors = [];
  config.name = input(form, "name").value.trim() || "experiment";
  config.tags = input(form, "tags")
    .value.split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  for (const field of FIELDS) {
    try {
      let value;
      if (field.type === "block") value = readBlock(form.querySelector("ol.block-order"));
      else if (field.type === "bool") value = input(form, field.path).checked;
      else value = parseValue(field, input(form, field.path).value);
      setDotted(config, field.path, value);
    } catch (exc) {
      if (!(exc instanceof ParseError)) throw exc;
      errors.push({ path: field.path, msg: exc.message });
    }
  }
  return { config, errors };
}

function submittedNote(created) {
  const runs = created.runs ?? [created];
  const note = el(
    "div",
    { class: "notice notice-ok" },
    runs.length > 1 ? `Sweep #${created.id} queued: ${runs.length} runs ` : "Queued ",
  );
  for (const run of runs.slice(0, 12)) {
    note.append(el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id}` }), " ");
  }
  return note;
}

// ---- the form's parts -------------------------------------------------------------------------

function buildForm(state) {
  const form = el("form", { class: "submit-form", novalidate: true });
  state.presetSelect = el(
    "select",
    { name: "preset", id: "f-preset" },
    el("option", { value: "", text: "defaults" }),
  );
  state.presetNote = el("div", { class: "preset-note" });
  state.formError = el("div", { class: "form-error", role: "alert" });
  state.result = el("div", { class: "form-result" });
  state.submitButton = el("button", { type: "submit", class: "primary", text: "Submit run" });
  state.sweep = sweepBuilder(() => updateButton(state));
  state.modelSize = el("p", { class: "model-size", "aria-live": "polite" });
  state.upload = el("input", { type: "file", accept: ".npz,.csv", name: "upload-file" });
  form.append(
    el(
      "div",
      { class: "form-head" },
      el(
        "div",
        { class: "field field-preset" },
        el("label", { for: "f-preset", text: "start from" }),
        state.presetSelect,
      ),
      textField("name", "name"),
      textField("tags", "tags (comma separated)"),
    ),
    state.presetNote,
    el(
      "div",
      { class: "sections" },
      SECTIONS.map((s) =>
        el(
          "fieldset",
          { class: "section" },
          el("legend", { text: s.title }),
          s.fields.map(fieldRow),
        ),
      ),
    ),
    state.modelSize,
    el(
      "div",
      { class: "upload-row" },
      el("label", { text: "upload a dataset (.npz / .csv)" }),
      state.upload,
    ),
    state.sweep.element,
    state.formError,
    el("div", { class: "form-actions" }, state.submitButton),
    state.result,
  );
  return form;
}

function updateButton(state) {
  const n = state.sweep.count();
  state.submitButton.textContent = n > 1 ? `Submit sweep (${n} runs)` : "Submit run";
}

function applyPreset(state, preset) {
  const parts = preset ? presetParts(preset) : { base: DEFAULT_BASE, grid: {}, seeds: null };
  state.base = structuredClone({ ...(state.defaults ?? {}), ...parts.base });
  fillForm(state.form, state.base);
  state.sweep.load(parts.grid, parts.seeds);
  setChildren(state.presetNote, preset ? presetTexts(preset) : null);
  updateButton(state);
}

async function upload(state) {
  const { form, formError } = state;
  if (!state.upload.files.length) return;
  clearErrors(form, formError);
  try {
    const up = await api.uploadDataset(state.upload.files[0]);
    input(form, "dataset.name").value = "upload";
    input(form, "dataset.upload_id").value = up.upload_id ?? up.id;
  } catch (exc) {
    showErrors(form, formError, exc, { field: "dataset.upload_id" });
  }
}

async function submit(state, onSubmitted) {
  const { form, formError } = state;
  clearErrors(form, formError);
  state.result.replaceChildren();
  const { config, errors } = readForm(form, state.base);
  const grid = state.sweep.read();
  errors.push(...grid.errors);
  if (errors.length) {
    errors.forEach((e) => markField(form, formError, e.path, e.msg));
    // The client's checks must not hide the server's: the config is complete (a field that did
    // not parse keeps its last valid value), so POST /api/describe validates the rest without
    // storing anything, and its 422 is shown beside the client's errors.
    await api.describe(config).catch((exc) => {
      if (exc instanceof api.ApiError && exc.status === 422) showErrors(form, formError, exc);
    });
    summariseErrors(form, formError);
    return;
  }
  state.submitButton.disabled = true;
  try {
    const isSweep = state.sweep.count() > 1 || Object.keys(grid.grid).length > 0 || grid.seeds;
    const created = isSweep
      ? await api.createSweep({ base: config, grid: grid.grid, seeds: grid.seeds })
      : await api.createRun(config);
    state.result.append(submittedNote(created));
    if (onSubmitted) onSubmitted(created);
  } catch (exc) {
    showErrors(form, formError, exc, { sweep: state.sweep.count() > 1 });
    summariseErrors(form, formError);
  } finally {
    state.submitButton.disabled = false;
  }
}

// Live size of the model being edited (POST /api/describe), a moment after the last edit.
function sizePreview(state) {
  let timer = null;
  let seq = 0;
  const show = () => {
    const { config, errors } = readForm(state.form, state.base);
    const mine = ++seq;
    if (errors.length) {
      state.modelSize.textContent = "model: fix the fields marked above";
      return;
    }
    api
      .describe(config)
      .then((d) => {
        if (mine === seq) {
          state.modelSize.textContent = `model: ${d.params.toLocaleString("en-US")} parameters, ${d.bn_layers.length} BN layers`;
        }
      })
      .catch((exc) => {
        if (mine === seq) state.modelSize.textContent = `model: ${exc.message}`;
      });
  };
  return () => {
    clearTimeout(timer);
    timer = setTimeout(show, 250);
  };
}

// Options and defaults are the server's (the served JSON schema); presets load after them, so
// a preset never fills a select that has no options yet.
async function setup(state, sizeSoon) {
  const { form } = state;
  try {
    const schemas = await api.loadSchemas();
    setBlockLayers(fieldOptions(schemas, "model.block"));
    fillBlockWidget(form.querySelector("ol.block-order"));
    for (const field of FIELDS.filter((f) => f.type === "select")) {
      input(form, field.path).replaceChildren(
        ...fieldOptions(schemas, field.path).map((o) =>
          el("option", { value: o, text: o || "(none)" }),
        ),
      );
    }
    state.defaults = { ...DEFAULT_BASE, ...defaultsOf(schemas) };
    state.base = structuredClone(state.defaults);
    fillForm(form, state.base);
    sizeSoon();
    form.dataset.schema = "ready";
    for (const [i, preset] of presetList(await api.presetsCached()).entries()) {
      state.presets.push(preset);
      state.presetSelect.append(el("option", { value: String(i), text: presetLabel(preset) }));
    }
    form.dataset.presets = "ready";
  } catch (exc) {
    state.presetNote.replaceChildren(notice(`form setup: ${exc.message}`, "warn"));
  }
}

/**
 * The form and choosePreset(id): fills the form with that study's preset once the presets are
 * loaded. onSubmitted(created) after a run or sweep was queued.
 */
export function createSubmitForm({ onSubmitted } = {}) {
  const state = { base: structuredClone(DEFAULT_BASE), defaults: null, presets: [], wanted: null };
  state.form = buildForm(state);
  const { form } = state;
  const choose = () => {
    const preset = state.presets[Number(state.presetSelect.value)];
    applyPreset(state, preset);
  };
  input(form, "model.arch").addEventListener("change", () =>
    setBlock(
      form.querySelector("ol.block-order"),
      readBlock(form.querySelector("ol.block-order")),
      input(form, "model.arch").value,
    ),
  );
  state.presetSelect.addEventListener("change", choose);
  state.upload.addEventListener("change", () => upload(state));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(state, onSubmitted);
  });
  const sizeSoon = sizePreview(state);
  form.addEventListener("input", sizeSoon);
  form.addEventListener("change", sizeSoon);
  const ready = setup(state, sizeSoon);
  const choosePreset = (id) =>
    ready.then(() => {
      const index = state.presets.findIndex((p) => p.id === id);
      if (index < 0) return;
      state.presetSelect.value = String(index);
      choose();
    });
  return { form, choosePreset };
}
