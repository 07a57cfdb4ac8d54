// Wires the modules: the router renders one view into <main>, tearing the previous one down
// (streams closed, Plotly figures purged); the header shows the service's health.

import * as api from "./api.js";
import { purgeAll } from "./charts.js";
import { renderCompare } from "./compare.js";
import { el } from "./dom.js";
import { renderRun } from "./runpage.js";
import { renderRuns } from "./runs.js";
import { renderSweep } from "./sweep.js";
import { compareUrl, onRouteChange, route } from "./state.js";

const main = document.getElementById("view");
let teardown = () => {};

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
    if (current.ids.length) document.querySelector('nav a[data-view="compare"]').setAttribute("href", compareUrl(current.ids));
    teardown = renderCompare(main, current.ids);
  } else if (current.view === "sweep") {
    document.title = "bnlab · sweep";
    teardown = renderSweep(main);
  } else if (current.view === "notfound") {
    document.title = "bnlab · page not found";
    main.append(el("h1", { text: "Page not found (404)" }),
      el("p", {}, "There is no page at this address. ", el("a", { href: "/", "data-link": true, text: "Runs" })));
    teardown = () => {};
  } else {
    document.title = "bnlab · runs";
    teardown = renderRuns(main);
  }
}

// The token dialog: asked once, on the first write refused with 401 (api.js stores it).
function askToken() {
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}

async function showHealth() {
  const box = document.getElementById("health");
  try {
    const h = await api.health();
    const workers = Array.isArray(h.workers) ? h.workers.length : 0;
    const text = `database ${h.database} · broker ${h.broker} · ${workers} worker${workers === 1 ? "" : "s"}`;
    box.replaceChildren(el("span", { class: h.status === "ok" ? "health-ok" : "health-bad", text }));
  } catch (exc) {
    box.replaceChildren(el("span", { class: "health-bad", text: `API: ${exc.message}` }));
  }
}

api.setTokenPrompt(askToken);
onRouteChange(show);
show(route());
showHealth();
