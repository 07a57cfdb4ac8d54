// Live updates from the server-sent events at /api/events. A watch closes its EventSource
// as soon as every run it follows has reached a terminal status: nothing keeps streaming
// for finished runs.

import { eventsUrl } from "./api.js";
import { isTerminal } from "../data/runs.js";

const MAX_FILTER_IDS = 200;
const EVENT_NAMES = ["message", "status", "run", "probe", "progress", "metrics", "step"];

// Events may be named or not, and carry `run_id` or `id`: normalise to one shape.
export function normalise(type, raw) {
  let data;
  try {
    data = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!data || typeof data !== "object") return null;
  const runId = Number(data.run_id ?? data.id ?? data.run?.id);
  if (!Number.isInteger(runId)) return null;
  return {
    type,
    runId,
    status: data.status ?? data.run?.status ?? null,
    step: data.step ?? null,
    progress: data.progress ?? data.run?.progress ?? null,
    data,
  };
}

/**
 * Follow runs live. `ids` are the runs whose terminal status ends the watch (null = any run,
 * kept open while the view lives, e.g. the runs table). Returns a `close` function.
 */
export function watch(ids, onEvent, { onClose } = {}) {
  const pending = ids ? new Set(ids.map(Number)) : null;
  if (pending && pending.size === 0) return () => {};
  // The server filters by id up to 200 runs; beyond that, take every event and filter here.
  const query = ids && ids.length <= MAX_FILTER_IDS ? { runs: ids.join(",") } : {};
  let source = null;
  let retry = null;
  window.__bnlabStreams.open += 1;
  let closed = false;

  const close = () => {
    if (closed) return;
    closed = true;
    clearTimeout(retry);
    source.close();
    window.__bnlabStreams.open -= 1;
    if (onClose) onClose();
  };

  const handle = (type) => (message) => {
    const event = normalise(type, message.data);
    if (!event || (pending && !pending.has(event.runId))) return;
    onEvent(event);
    if (pending && event.status && isTerminal(event.status)) {
      pending.delete(event.runId);
      if (pending.size === 0) close();
    }
  };
  // EventSource retries a dropped connection by itself but gives up on an HTTP error (a 401
  // before the token was entered, a 503 while the database restarts): open it again later,
  // with the token cookie api.js has set by then.
  const open = () => {
    source = new EventSource(eventsUrl(query));
    for (const name of EVENT_NAMES) source.addEventListener(name, handle(name));
    source.addEventListener("error", () => {
      if (!closed && source.readyState === EventSource.CLOSED) retry = setTimeout(open, 2000);
    });
  };
  open();
  return close;
}

// Exposed for tests: how many EventSources this page holds open right now.
window.__bnlabStreams = { open: 0 };
