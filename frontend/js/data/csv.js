// A run's series as CSV files (the run page's "Series CSV"). Pure: no DOM.

function csvCell(value) {
  if (value === null || value === undefined) return "";
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function metricsCsv(columns) {
  const keys = ["step", ...Object.keys(columns).filter((k) => k !== "step")];
  const rows = (columns.step ?? []).map((_, i) =>
    keys.map((k) => csvCell(columns[k]?.[i])).join(","),
  );
  return [keys.join(","), ...rows].join("\n") + "\n";
}

export function layersCsv(layers) {
  const keys = [
    "train_mean",
    "train_var",
    "running_mean",
    "running_var",
    "eval_mean",
    "eval_var",
    "shift",
    "grad_norm",
    "shift_li",
    "shift_floor",
    "shift_li_floor",
    "shift_log_q1",
    "shift_log_median",
    "shift_log_q3",
  ];
  const lines = [["layer", "name", "step", ...keys].join(",")];
  for (const layer of layers) {
    layer.step.forEach((step, i) => {
      lines.push(
        [layer.index, csvCell(layer.name), step, ...keys.map((k) => csvCell(layer[k]?.[i]))].join(
          ",",
        ),
      );
    });
  }
  return `${lines.join("\n")}\n`;
}
