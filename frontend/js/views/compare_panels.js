// The compare view's HTML panels: the legend (which colour is which run, hide/show), the config
// fields that differ, and the test-accuracy table. With many runs they start collapsed and
// searchable, and their rows are built only when first opened (a 100-run view stays light).

import { configValue, differingPaths, kindOf, mixedKinds } from "../data/configs.js";
import { shortValue } from "../data/fields.js";
import { fmt, pct } from "../data/format.js";
import { LEGEND_OPEN_UP_TO, TABLES_OPEN_UP_TO } from "../data/groups.js";
import { isTerminal } from "../data/runs.js";
import { el, fold, statusBadge, swatch } from "../lib/dom.js";
import { runUrl } from "../lib/router.js";

// A fold whose rows are built on first opening (at once when it starts open).
function lazyFold(options, build) {
  const details = fold(options);
  let built = false;
  const ensure = () => {
    if (built || !details.open) return;
    built = true;
    details.append(build());
  };
  details.addEventListener("toggle", ensure);
  ensure();
  return details;
}

function legendItem(ctx, entry) {
  const hidden = ctx.isHidden(entry);
  return el(
    "span",
    { class: `legend-item${hidden ? " hidden-run" : ""}`, dataset: { key: entry.key } },
    el("button", {
      type: "button",
      class: "hide-toggle",
      "aria-pressed": String(hidden),
      title: "hide or show in every chart",
      text: hidden ? "show" : "hide",
      onclick: () => ctx.toggleHidden(entry),
    }),
    swatch(ctx.colourOf(entry)),
    entry.runs.map((run) =>
      el("a", {
        href: runUrl(run.id),
        "data-link": true,
        class: "legend-run",
        title: run.name,
        text: `#${run.id}`,
      }),
    ),
    el("span", { class: "legend-label", text: entry.label.replace(/^(#\d+,?)+ /, "") }),
    entry.runs.map((run) => (isTerminal(run.status) ? null : statusBadge(run.status))),
  );
}

/** Which colour is which run: a hide/show button per entry; searchable past a dozen entries. */
export function legendPanel(ctx) {
  const many = ctx.allEntries.length > LEGEND_OPEN_UP_TO;
  let items = null;
  return lazyFold(
    {
      title: "Runs and colours",
      count: ctx.allEntries.length,
      open: !many,
      cls: "legend",
      search: many ? { placeholder: "search runs", rows: () => items?.children ?? [] } : null,
    },
    () => {
      items = el(
        "div",
        { class: "legend-items" },
        ctx.allEntries.map((entry) => legendItem(ctx, entry)),
      );
      return el(
        "div",
        {},
        el(
          "div",
          { class: "legend-key" },
          el("span", { class: "key-solid", text: "train (batch statistics)" }),
          el("span", { class: "key-dash", text: "inference (eval-mode input)" }),
          el("span", { class: "key-dot", text: "running estimate" }),
        ),
        items,
      );
    },
  );
}

// A config value as the diff shows it: "–" where the run has no such field (a script run's own
// config beside an engine run's), never "undefined".
function valueCell(run, path) {
  const value = configValue(run, path);
  return value === undefined
    ? el("td", { class: "unset", text: "–", title: "not in this run's config" })
    : el("td", { text: shortValue(value) });
}

function diffTable(ctx, paths) {
  const runs = ctx.runs;
  const mixed = mixedKinds(runs);
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      { class: "diff" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { text: "field" }),
          runs.map((run) => el("th", {}, swatch(ctx.colourOf(ctx.entryOf(run.id))), `#${run.id}`)),
        ),
      ),
      el(
        "tbody",
        {},
        mixed
          ? el(
              "tr",
              {},
              el("td", { class: "path", text: "kind" }),
              runs.map((r) => el("td", { text: kindOf(r) })),
            )
          : null,
        paths.map((p) =>
          el(
            "tr",
            {},
            el("td", { class: "path", text: p }),
            runs.map((run) => valueCell(run, p)),
          ),
        ),
      ),
    ),
  );
}

/**
 * The config fields that differ between the compared runs. Fields are compared within each
 * kind of run (an engine run's ExperimentConfig against the others', a script's own config
 * against the other scripts'): engine and script configs share no schema.
 */
export function diffPanel(ctx) {
  const paths = differingPaths(ctx.runs);
  const many = ctx.runs.length > TABLES_OPEN_UP_TO || paths.length > 30;
  let table = null;
  return lazyFold(
    {
      title: "Config fields that differ",
      count: paths.length,
      open: !many,
      cls: "diff-fold",
      search:
        paths.length > 10
          ? { placeholder: "search fields", rows: () => table?.querySelectorAll("tbody tr") ?? [] }
          : null,
    },
    () => {
      // Engine and script runs side by side: their kinds differ even where no field does.
      table =
        paths.length || mixedKinds(ctx.runs)
          ? diffTable(ctx, paths)
          : el("p", { class: "hint", text: "The selected runs have the same config." });
      return table;
    },
  );
}

function summaryRow(run, sizes) {
  const s = run.summary ?? {};
  const shifts = Object.values(s.shift_by_layer ?? {}).filter(Number.isFinite);
  return el(
    "tr",
    { dataset: { runId: run.id } },
    el(
      "td",
      {},
      el("a", { href: runUrl(run.id), "data-link": true, text: `#${run.id} ` }),
      el("span", { class: "run-name", text: run.name }),
    ),
    el("td", {}, statusBadge(run.status)),
    el("td", { class: "num", text: pct(s.test_acc_eval) }),
    sizes.map((bs) => el("td", { class: "num", text: pct(s.test_acc_train_mode?.[bs]) })),
    el("td", { class: "num", text: pct(s.test_acc_recalibrated) }),
    el("td", { class: "num", text: shifts.length ? fmt(Math.max(...shifts)) : "–" }),
  );
}

/** Test accuracy per run: eval, train mode at every test batch size, recalibrated, max shift. */
export function summaryPanel(ctx) {
  const sizes = [
    ...new Set(ctx.runs.flatMap((r) => Object.keys(r.summary?.test_acc_train_mode ?? {}))),
  ].sort((a, b) => Number(a) - Number(b));
  const many = ctx.runs.length > TABLES_OPEN_UP_TO;
  let tbody = null;
  return lazyFold(
    {
      title: "Test accuracy per run",
      count: ctx.runs.length,
      open: !many,
      cls: "summary-fold",
      search: many ? { placeholder: "search runs", rows: () => tbody?.children ?? [] } : null,
    },
    () => {
      tbody = el(
        "tbody",
        {},
        ctx.runs.map((run) => summaryRow(run, sizes)),
      );
      return el(
        "div",
        { class: "table-scroll" },
        el(
          "table",
          { class: "summary" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              [
                "run",
                "status",
                "test eval",
                ...sizes.map((s) => `train-mode @${s}`),
                "recalibrated",
                "max shift",
              ].map((h) => el("th", { text: h })),
            ),
          ),
          tbody,
        ),
      );
    },
  );
}
