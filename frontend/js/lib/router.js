// The view state lives in the URL, so every view is a link that can be shared:
//   /                      runs table   (?status=&tag=&sweep=&q=)
//   /compare?runs=1,2,...  compare view (&layer=&logy=1&smooth=0.6&group=1&running=1)
//   /runs/ID               one run
//   /sweep?sweep=ID        sweep view (or ?runs=1,2,...; &x=&metric=)

const listeners = new Set();

export function route() {
  const { pathname, searchParams } = new URL(window.location.href);
  const params = Object.fromEntries(searchParams.entries());
  const runMatch = pathname.match(/^\/runs\/(\d+)\/?$/);
  if (runMatch) return { view: "run", id: Number(runMatch[1]), params };
  if (pathname.replace(/\/$/, "") === "/compare") {
    return { view: "compare", ids: parseIds(params.runs), params };
  }
  if (pathname.replace(/\/$/, "") === "/sweep") return { view: "sweep", params };
  if (pathname !== "/" && pathname !== "/index.html") return { view: "notfound", params };
  return { view: "runs", params };
}

export function parseIds(text) {
  return [
    ...new Set(
      (text || "")
        .split(",")
        .map(Number)
        .filter((n) => Number.isInteger(n) && n > 0),
    ),
  ];
}

export function compareUrl(ids) {
  return `/compare?runs=${ids.join(",")}`;
}

export function runUrl(id) {
  return `/runs/${id}`;
}

export function onRouteChange(fn) {
  listeners.add(fn);
}

function notify() {
  for (const fn of listeners) fn(route());
}

export function navigate(url) {
  history.pushState(null, "", url);
  notify();
}

// Changes query parameters of the current view without a new history entry or a re-render
// of the whole view: the caller redraws what the parameter controls.
export function setParams(changes) {
  const url = new URL(window.location.href);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "" || value === false) {
      url.searchParams.delete(key);
    } else {
      url.searchParams.set(key, value === true ? "1" : String(value));
    }
  }
  history.replaceState(null, "", url.pathname + url.search);
}

export function param(name, fallback = null) {
  const value = new URL(window.location.href).searchParams.get(name);
  return value === null ? fallback : value;
}

export function flagParam(name) {
  return param(name) === "1";
}

window.addEventListener("popstate", notify);

// Links marked data-link navigate inside the app (no page load).
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
