// Wires the modules: the router renders one view into <main>, tearing the previous one down
// (streams closed, Plotly figures purged); the header shows the service's health.
//   views/  one file per page (runs, run, compare, sweep) and their panels
//   charts/ Plotly and the traces each page draws
//   data/   pure figures and formats (no DOM; unit-tested with node --test)
//   lib/    the server (api, stream), the URL (router), DOM helpers

import * as api from "./lib/api.js";
import { purgeAll } from "./charts/plotly.js";
import { el } from "./lib/dom.js";
import { compareUrl, onRouteChange, route } from "./lib/router.js";
import { renderCompare } from "./views/compare.js";
import { showHealth } from "./views/health.js";
import { renderRun } from "./views/run.js";
import { renderRuns } from "./views/runs.js";
import { renderSweep } from "./views/sweep.js";

const main = document.getElementById("view");
let teardown = () => {};

function notFound() {
  document.title = "bnlab · page not found";
  main.append(
    el("h1", { text: "Page not found (404)" }),
    el(
      "p",
      {},
      "There is no page at this address. ",
      el("a", { href: "/", "data-link": true, text: "Runs" }),
    ),
  );
  return () => {};
}

function show(current) {
  teardown();
  purgeAll(main);
  main.replaceChildren();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === current.view);
  }
  if (current.view === "run") {
    document.title = `bnlab · run #${current.id}`;
    teardown = renderRun(main, current.id);
  } else if (current.view === "compare") {
    document.title = `bnlab · compare ${current.ids.length} runs`;
    // The Compare tab returns to the last compared selection.
    if (current.ids.length)
      document
        .querySelector('nav a[data-view="compare"]')
        .setAttribute("href", compareUrl(current.ids));
    teardown = renderCompare(main, current.ids);
  } else if (current.view === "sweep") {
    document.title = "bnlab · sweep";
    teardown = renderSweep(main);
  } else if (current.view === "notfound") {
    teardown = notFound();
  } else {
    document.title = "bnlab · runs";
    teardown = renderRuns(main);
  }
}

// The token dialog: asked once, on the first write refused with 401 (lib/api.js stores it).
function askToken() {
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

api.setTokenPrompt(askToken);
onRouteChange(show);
show(route());
showHealth(document.getElementById("health"));
