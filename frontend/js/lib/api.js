// The only module that talks to the server with fetch: one function per REST endpoint, plus
// the served OpenAPI schema (the form's options and defaults) and the presets, each fetched once.
// Requests carry `Authorization: Bearer <token>` once a token is known; it is asked once (on
// the first 401: a write, or any read when the server sets BNLAB_AUTH_READS) and kept in
// localStorage, so a researcher types it once per browser. It is also put in the
// `bnlab_token` cookie (path /api): EventSource and download links cannot send a header, and
// the server accepts the cookie for reads only (never for writes, so no other site can make
// this browser write with it).

const TOKEN_KEY = "bnlab.token";
const COOKIE = "bnlab_token";

function setCookie(token) {
  const value = token ? encodeURIComponent(token) : "";
  const expiry = token ? "" : "; Max-Age=0";
  document.cookie = `${COOKIE}=${value}; Path=/api; SameSite=Strict${expiry}`;
}

function keepToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
  setCookie(token);
}

export class ApiError extends Error {
  constructor(status, detail, message) {
    super(message);
    this.status = status;
    this.detail = detail; // FastAPI's `detail`: a string or a list of {loc, msg}
  }
}

let tokenPrompt = null; // async () => string | null, installed by main.js (a modal dialog)

export function setTokenPrompt(fn) {
  tokenPrompt = fn;
}

export function storedToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  setCookie(null);
}

// A token stored by an earlier visit goes back into the cookie (it may have been cleared).
if (storedToken()) setCookie(storedToken());

function buildUrl(path, query) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    url.searchParams.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  return url;
}

function messageOf(status, detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return `HTTP ${status}`;
}

async function send(method, path, { query, json, form } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(buildUrl(path, query), { method, headers, body });
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// A request that answers 401 asks for the token (one dialog for every request waiting on
// it), stores it and tries again.
let asking = null;

function askOnce() {
  if (!asking) {
    asking = tokenPrompt()
      .then((token) => {
        if (token) keepToken(token);
        return token;
      })
      .finally(() => {
        asking = null;
      });
  }
  return asking;
}

async function request(method, path, options = {}) {
  let response = await send(method, path, options);
  if (response.status === 401 && tokenPrompt) {
    const token = await askOnce();
    if (token) response = await send(method, path, options);
  }
  if (options.raw && response.ok) return response;
  const data = await parse(response);
  if (!response.ok) {
    const detail = data && typeof data === "object" ? data.detail : data;
    throw new ApiError(response.status, detail, messageOf(response.status, detail));
  }
  return data;
}

export const health = () => request("GET", "/api/health");
export const presets = () => request("GET", "/api/presets");
export const getPreset = (id) => request("GET", `/api/presets/${encodeURIComponent(id)}`);

export const listRuns = (filters = {}) => request("GET", "/api/runs", { query: filters });
export const getRun = (id) => request("GET", `/api/runs/${id}`);
export const createRun = (config) => request("POST", "/api/runs", { json: config });
// What a config builds (parameters, BN layers, ...): nothing is stored.
export const describe = (config) => request("POST", "/api/describe", { json: config });
export const createSweep = (sweep) => request("POST", "/api/sweeps", { json: sweep });
export const cancelRun = (id) => request("POST", `/api/runs/${id}/cancel`);
export const retryRun = (id) => request("POST", `/api/runs/${id}/retry`);
export const deleteRun = (id) => request("DELETE", `/api/runs/${id}`);
// The runs table: groups with n/mean/sd/min/max of metrics; bulk tag/untag/delete.
export const runGroups = (query = {}) => request("GET", "/api/runs/groups", { query });
export const bulkRuns = (ids, action, tags = []) =>
  request("POST", "/api/runs/bulk", { json: { ids, action, tags } });
export const listExports = (id) => request("GET", `/api/runs/${id}/exports`);

// The raw point count of a downsampled metrics response travels in X-Raw-Points (the body
// keeps docs/design.md's columnar shape); it is returned beside the columns.
export async function getMetrics(id, { keys, maxPoints } = {}) {
  const response = await request("GET", `/api/runs/${id}/metrics`, {
    query: { keys, max_points: maxPoints },
    raw: true,
  });
  const columns = await response.json();
  const raw = Number(response.headers.get("X-Raw-Points"));
  return { columns, rawPoints: Number.isFinite(raw) && raw > 0 ? raw : null };
}

// At most this many layers come in one answer (bnlab/core/schema/metrics.py MAX_LAYERS_PER_READ):
// a deeper net's answer says `truncated`, and the rest is asked for by `layers=` ranges.
const LAYERS_PER_READ = 256;

// "256-511", "512-767", ... for the layers from `from` to `total` - 1.
export function layerSpans(from, total, per = LAYERS_PER_READ) {
  const spans = [];
  for (let start = from; start < total; start += per)
    spans.push(`${start}-${Math.min(total, start + per) - 1}`);
  return spans;
}

const oneLayerRead = (id, { keys, maxPoints, layers } = {}) =>
  request("GET", `/api/runs/${id}/layers`, { query: { keys, max_points: maxPoints, layers } });

// Every layer of a run: a deep net's (298 BN layers) in as many reads as the cap asks.
export async function getLayers(id, options = {}) {
  const first = await oneLayerRead(id, options);
  if (!first?.truncated) return first;
  const spans = layerSpans(first.layers.length, first.layers_total ?? first.layers.length);
  const rest = await Promise.all(spans.map((layers) => oneLayerRead(id, { ...options, layers })));
  return {
    ...first,
    truncated: false,
    layers: [...first.layers, ...rest.flatMap((r) => r.layers ?? [])],
  };
}

const oneCompare = (ids, { layerKeys, metricKeys, maxPoints, stepMin, stepMax, layers } = {}) =>
  request("GET", "/api/compare", {
    query: {
      runs: ids,
      layer_keys: layerKeys,
      metric_keys: metricKeys,
      max_points: maxPoints,
      step_min: stepMin,
      step_max: stepMax,
      layers,
    },
  });

// A compare view's data in one request: per run {run, metrics, metrics_raw_points, layers}, each
// what getRun/getMetrics/getLayers answer. Unknown ids are a 404 whose detail[0].input lists them.
// Runs of a deep net whose layers were cut (`truncated`) get the rest in further requests.
export async function getCompare(ids, options = {}) {
  const body = await oneCompare(ids, options);
  const cut = body.runs.filter((e) => e.layers?.truncated);
  if (!cut.length) return body;
  const total = Math.max(...cut.map((e) => e.layers.layers_total ?? 0));
  const from = Math.min(...cut.map((e) => e.layers.layers.length));
  const more = await Promise.all(
    layerSpans(from, total).map((layers) =>
      oneCompare(
        cut.map((e) => e.run.id),
        { ...options, layers },
      ),
    ),
  );
  for (const entry of cut) {
    const have = new Set(entry.layers.layers.map((l) => l.index));
    for (const answer of more) {
      const mine = answer.runs.find((e) => e.run.id === entry.run.id)?.layers.layers ?? [];
      entry.layers.layers.push(...mine.filter((l) => !have.has(l.index)));
    }
    entry.layers.truncated = false;
  }
  return body;
}

export async function exportRun(id, format = "npz") {
  const response = await request("GET", `/api/runs/${id}/export`, {
    query: { format },
    raw: true,
  });
  return response.blob();
}

export function uploadDataset(file) {
  const form = new FormData();
  form.append("file", file);
  return request("POST", "/api/datasets", { form });
}

// EventSource cannot send headers and is not fetch; stream.js opens it on this URL.
export function eventsUrl(query = {}) {
  return buildUrl("/api/events", query).toString();
}

// ---- fetched once per page -------------------------------------------------------------------

let schemas = null;

// The served OpenAPI document's component schemas (data/schema.js reads them).
export function loadSchemas() {
  if (!schemas) {
    schemas = fetch("/openapi.json", { headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error(`GET /openapi.json: HTTP ${response.status}`);
        return response.json();
      })
      .then((spec) => spec.components.schemas)
      .catch((exc) => {
        schemas = null; // try again next time
        throw exc;
      });
  }
  return schemas;
}

let presetsOnce = null;

// The seed studies, fetched once (the form, the empty runs page and the verdicts' study links).
export function presetsCached() {
  if (!presetsOnce) {
    presetsOnce = presets().catch((exc) => {
      presetsOnce = null;
      throw exc;
    });
  }
  return presetsOnce;
}

const described = new Map(); // describe key → Promise of the answer (null when refused)

// POST /api/describe once per key (data/layers.js describeKey): runs that build the same
// network share one answer. A refused config (an upload since deleted) answers null.
export function describeOnce(key, config) {
  if (!described.has(key))
    described.set(
      key,
      describe(config).catch(() => null),
    );
  return described.get(key);
}
