// The header's health line: database, broker, and the workers by what they train on ("1 worker
// · CPU", "4 workers · GPU"); a worker that must use a GPU and cannot (worker/device.py's
// `error`) is named as a problem, a CPU worker is not.

import * as api from "../lib/api.js";
import { plural } from "../data/format.js";
import { el } from "../lib/dom.js";

// A worker that must use a GPU and cannot start CUDA (it takes no run). Older workers also put
// a CPU-only torch's CUDA message in `error`; without require_cuda that is no failure.
const failed = (w) => Boolean(w.device?.error && w.device?.require_cuda !== false);

function kindOf(w) {
  if (failed(w)) return "no device";
  return w.device?.kind === "gpu" || w.device?.cuda_available ? "GPU" : "CPU";
}

// "CPU", "GPU", "2 GPU, 1 CPU" from the workers' device reports.
export function workerKinds(workers) {
  const counts = new Map();
  for (const w of workers) counts.set(kindOf(w), (counts.get(kindOf(w)) ?? 0) + 1);
  if (counts.size === 1) return [...counts.keys()][0];
  return [...counts].map(([k, n]) => `${n} ${k}`).join(", ");
}

// One line per worker for the tooltip: what it trains on, and why CUDA is not in use.
function workerTitle(workers) {
  return workers
    .map((w) => {
      const d = w.device ?? {};
      const what = failed(w)
        ? `cannot train: ${d.error}`
        : (d.name ?? (d.cuda_available ? d.gpu_name : "cpu"));
      const why = d.cuda_note ?? (failed(w) ? null : d.error);
      return `${w.host ?? "worker"} pid ${w.pid ?? "?"}: ${what}${why ? ` (${why})` : ""}`;
    })
    .join("\n");
}

/** Fills `box` with the health line; a failure to ask is shown there too. */
export async function showHealth(box) {
  try {
    const h = await api.health();
    const workers = Array.isArray(h.workers) ? h.workers : [];
    const bad = workers.some(failed);
    const text =
      `database ${h.database} · broker ${h.broker} · ${plural(workers.length, "worker")}` +
      (workers.length ? ` · ${workerKinds(workers)}` : "");
    box.replaceChildren(
      el("span", {
        class: h.status === "ok" && !bad ? "health-ok" : "health-bad",
        text,
        title: workers.length
          ? workerTitle(workers)
          : "no worker is running: runs wait in the queue",
      }),
    );
  } catch (exc) {
    box.replaceChildren(el("span", { class: "health-bad", text: `API: ${exc.message}` }));
  }
}
