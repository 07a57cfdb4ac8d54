"""The dashboard's first impressions, read from the layout Chromium computes (issue 25): the runs
table's name column at 1280 px, the first chart of a 100-run compare view on the first screen,
nothing "undefined" when engine and script runs are compared, a verdict in words with what to
do, console errors counted on every page, and no sideways overflow at 390 px with the health
line visible. With BNLAB_DOCS_SCREENSHOT=1 the pictures docs/dashboard.md and the README show
are written to docs/img/."""

from __future__ import annotations

import os
import shutil
import statistics
import uuid

import pytest
import torch
from dashboard_stack import (
    REPO,
    screenshot,
    seed_runs,
    start_stack,
    submit,
    tiny_config,
    wait_finished,
)
from test_dashboard_scale import OVERFLOW_JS
from torch import nn

import bnlab

READY = 90_000
DOCS_IMG = REPO / "docs" / "img"
# A sweep's run names are "<sweep name> · <its grid cell>": some 80 characters are usual.
LONG = "variance shift · block=linear>dropout>batchnorm "
torch.set_num_threads(1)


def docs_shot(pg, name: str, *, full_page: bool = False) -> None:
    """A picture for the docs: artifacts/screenshots always, docs/img/ on request."""
    path = screenshot(pg, name) if full_page else None
    if path is None:
        path = REPO / "artifacts" / "screenshots" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(path))
    if os.environ.get("BNLAB_DOCS_SCREENSHOT") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / f"{name}.png")


@pytest.fixture
def open_page(browser):
    """open_page(width, height) -> a page that records console errors and uncaught exceptions."""
    contexts = []

    def make(width: int = 1280, height: int = 800, **kw):
        context = browser.new_context(viewport={"width": width, "height": height}, **kw)
        contexts.append(context)
        pg = context.new_page()
        pg.console_errors = []
        pg.on(
            "console",
            lambda m: (
                pg.console_errors.append(f"{m.text} @ {m.location.get('url')}")
                if m.type == "error"
                else None
            ),
        )
        pg.on("pageerror", lambda exc: pg.console_errors.append(f"uncaught: {exc}"))
        return pg

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def long_named(stack):
    prefix = f"{LONG}{uuid.uuid4().hex[:4]} "
    ids = seed_runs(stack.database_url, n_runs=8, n_layers=2, n_steps=20, name_prefix=prefix)
    return prefix, ids


def test_name_column_readable_at_1280(stack, open_page, long_named):
    """At 1280 px the name column is wide enough that a long sweep name reads in one or two
    lines (before: ~40-150 px, names broken every few letters, rows ~235 px tall)."""
    prefix, ids = long_named
    pg = open_page(1280, 800)
    pg.goto(f"{stack.url}/?q={prefix.split(' ')[-2]}")
    pg.wait_for_function(
        f"document.querySelectorAll('table.runs tbody tr[data-run-id]').length === {len(ids)}",
        timeout=READY,
    )
    cells = pg.evaluate("""() => [...document.querySelectorAll('table.runs tbody td.name')]
        .map(td => { const a = td.querySelector('.run-name');
                     return {width: td.getBoundingClientRect().width,
                             lines: a.getClientRects().length,
                             row: td.parentElement.getBoundingClientRect().height,
                             chars: a.textContent.length}; })""")
    assert cells and all(c["chars"] > 80 for c in cells)
    for c in cells:
        assert c["width"] >= 220, cells
        assert c["lines"] <= 2, cells
        assert c["row"] <= 60, cells
    table = pg.evaluate("document.querySelector('table.runs').getBoundingClientRect().right")
    assert table <= 1280  # the default columns fit the screen beside the name
    assert not pg.console_errors, pg.console_errors
    docs_shot(pg, "runs-table")


def test_compare_100_runs_puts_charts_first(stack, open_page):
    """A 100-run compare view: the first chart is on the first screen (before: 11,948 px down a
    16,504 px page); the legend and the per-run tables start collapsed, are built when opened,
    and the legend's search keeps exactly the runs it matches."""
    ids = seed_runs(stack.database_url, n_runs=100, n_layers=3, n_steps=40, name_prefix="hundred ")
    pg = open_page(1280, 800)
    pg.goto(f"{stack.url}/compare?runs={','.join(map(str, ids))}")
    pg.wait_for_selector("body[data-ready=compare]", timeout=READY)
    first = pg.evaluate("""() => { const c = document.querySelector('.js-plotly-plot');
        return {id: c.id, top: c.getBoundingClientRect().top + scrollY}; }""")
    assert first["id"].startswith("chart-layer-") and first["top"] < 800, first
    folds = pg.evaluate("""() => [...document.querySelectorAll('details.fold')]
        .map(d => ({cls: d.className, open: d.open}))""")
    assert len(folds) >= 4 and not any(f["open"] for f in folds), folds
    assert pg.locator(".legend-item").count() == 0  # not built while collapsed
    docs_shot(pg, "compare-100")
    pg.locator("details.legend > summary").click()
    assert pg.locator(".legend-item").count() == 100
    pg.fill("details.legend .fold-search", "seed=7")
    shown = pg.evaluate("""() => [...document.querySelectorAll('.legend-item')]
        .filter(e => !e.hidden).map(e => Number(e.dataset.key))""")
    with stack.client() as c:
        seeds = {
            r["id"]: r["config"]["train"]["seed"]
            for r in c.get(
                "/api/runs", params={"ids": ",".join(map(str, ids)), "limit": 500}
            ).json()["data"]
        }
    assert sorted(shown) == sorted(i for i in ids if seeds[i] == 7) and shown
    assert not pg.console_errors, pg.console_errors


class SequentialNet(nn.Module):
    """A user's own model: BN inside an nn.Sequential (named by position), dropout before it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.BatchNorm1d(32), nn.ReLU()
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def stream_script_run(url: str, spool) -> int:
    torch.manual_seed(0)
    model = SequentialNet()
    x, y = torch.randn(16 * 12, 64), torch.randint(0, 10, (16 * 12,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with bnlab.init(
        name="my sequential net", config={"lr": 0.05, "optimiser": "sgd"}, url=url, dir=spool
    ) as run:
        run.watch(model, held_out=(torch.randn(64, 64), torch.randint(0, 10, (64,))), every=4)
        for k in range(12):
            loss = nn.functional.cross_entropy(
                model(x[16 * k : 16 * k + 16]), y[16 * k : 16 * k + 16]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss.detach())
    return run.id


@pytest.fixture(scope="module")
def mixed(stack, tmp_path_factory):
    """A finished engine run (dropout before BN) and a script run of a user's nn.Sequential."""
    engine = submit(stack, tiny_config("engine mlp", **{"model.widths": [32, 32]}))
    script = stream_script_run(stack.url, tmp_path_factory.mktemp("spool"))
    assert wait_finished(stack, engine)["status"] == "succeeded", stack.log_tail()
    return engine, script


def open_all_folds(pg) -> None:
    pg.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    pg.wait_for_timeout(300)


def test_mixed_engine_and_script_compare_shows_no_undefined(stack, open_page, mixed):
    """Comparing an engine run with a script run: no "undefined" anywhere on the page (text,
    every panel opened, chart names and titles); the script run is labelled as a script; each
    BN layer is named with its type and what feeds it (the script's `features.3` after its
    Dropout, the engine's blocks.0.bn a BatchNorm1d after Dropout)."""
    engine, script = mixed
    pg = open_page(1280, 800)
    pg.goto(f"{stack.url}/compare?runs={engine},{script}")
    pg.wait_for_selector("body[data-ready=compare]", timeout=READY)
    open_all_folds(pg)
    text = pg.evaluate("document.body.innerText")
    assert "undefined" not in text and "NaN" not in text
    charts = pg.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(d =>
        JSON.stringify([d.layout.title, d.data.map(t => [t.name, t.hovertemplate])]))""")
    assert charts and not [c for c in charts if "undefined" in c]
    labels = pg.locator(".legend-label").all_inner_texts()
    assert any(label.startswith("script: SequentialNet") for label in labels), labels
    kind = pg.locator(f'tr[data-entry="{script}"][data-layer="features.3"] .layer-kind')
    assert kind.inner_text() == "after Dropout"
    engine_kind = pg.locator(f'tr[data-entry="{engine}"][data-layer="blocks.0.bn"] .layer-kind')
    assert engine_kind.inner_text() == "BatchNorm1d after Dropout"
    options = pg.locator("select[name=layer] option").all_inner_texts()
    assert "0: blocks.0.bn · BatchNorm1d after Dropout" in options, options
    kinds = pg.locator("table.diff tbody tr").first.inner_text().split()
    assert kinds == ["kind", "engine", "script"], kinds  # configs compared within each kind
    assert not pg.console_errors, pg.console_errors
    pg.goto(f"{stack.url}/runs/{script}")
    pg.wait_for_selector("body[data-ready=run]", timeout=READY)
    assert "undefined" not in pg.evaluate("document.body.innerText")
    row = pg.locator('.run-shifts tr[data-layer="features.3"]')
    assert row.locator(".layer-kind").inner_text() == "after Dropout"


def test_run_page_verdict_in_words(stack, open_page, mixed):
    """The run page says in words whether the shift is real, against its noise floor and its
    prediction, with the same figures as the run's summary, and what to do, linked to the
    study that shows it; the link opens that study in the new-experiment form."""
    engine, _ = mixed
    with stack.client() as c:
        s = c.get(f"/api/runs/{engine}").json()["summary"]
    name = max(
        s["shift_by_layer"],
        key=lambda n: (s["shift_by_layer"][n] - 1) / (s["shift_floor_by_layer"][n] - 1),
    )
    shift, floor = s["shift_by_layer"][name], s["shift_floor_by_layer"][name]
    multiple = (shift - 1) / (floor - 1)
    pg = open_page(1280, 800)
    pg.goto(f"{stack.url}/runs/{engine}")
    pg.wait_for_selector("body[data-ready=run]", timeout=READY)
    verdict = pg.locator(".verdict .verdict-line").first.inner_text()
    times = f"{round(multiple)}×" if multiple >= 10 else f"{multiple:.1f}×"
    assert f"{name}" in verdict and f"shift {shift:.3f}" in verdict, verdict
    assert f"noise floor {floor:.3f}" in verdict, verdict
    if multiple > 1.5:
        assert f"{times} the noise level" in verdict, (verdict, multiple)
    else:
        assert "at the noise floor" in verdict, verdict
    predicted = s["shift_predicted_by_layer"].get(name)
    if predicted is not None:
        assert f"prediction ({predicted:.3f})" in verdict, verdict
    row = pg.locator(f'.run-shifts tr[data-layer="{name}"]')
    assert row.locator('td[data-col="floor"]').inner_text() == f"{floor:.3f}"
    assert row.locator(".verdict-cell").inner_text().startswith(verdict.split(", ", 1)[1][:12])
    advice = pg.locator(".verdict ul.advice li")
    assert advice.count() >= 1
    recal_gap = s["test_acc_recalibrated"] - s["test_acc_eval"]
    if recal_gap >= 0.005:
        item = pg.locator('.verdict li[data-advice="recalibrate"]')
        assert f"+{100 * recal_gap:.1f} pt" in item.inner_text()
    link = advice.first.locator("a.study-link")
    href = link.get_attribute("href")
    assert href.startswith("/?preset=")
    docs_shot(pg, "run-verdict")
    link.click()
    pg.wait_for_selector("aside.drawer:not([hidden])", timeout=READY)
    pg.wait_for_function(
        "document.querySelector('form.submit-form')?.dataset.presets === 'ready'", timeout=READY
    )
    preset_id = href.split("=", 1)[1]
    with stack.client() as c:
        title = c.get(f"/api/presets/{preset_id}").json()["title"]
    pg.wait_for_function(
        "t => { const s = document.querySelector('select[name=preset]');"
        " return s.options[s.selectedIndex].text === t; }",
        arg=title,
        timeout=READY,
    )
    assert not pg.console_errors, pg.console_errors


def test_no_console_errors_and_cpu_worker_in_health(stack, open_page, mixed):
    """Every page, the drawer and the 404 page's links load without a console error (before:
    a 404 for /favicon.ico on every page); the header names the CPU worker as a CPU worker."""
    engine, script = mixed
    pg = open_page(1280, 800)
    for path, ready in (
        ("/", "runs"),
        (f"/runs/{engine}", "run"),
        (f"/compare?runs={engine},{script}", "compare"),
        (f"/sweep?runs={engine},{script}", "sweep"),
    ):
        pg.goto(stack.url + path)
        pg.wait_for_selector(f"body[data-ready={ready}]", timeout=READY)
        pg.wait_for_timeout(500)
    pg.goto(stack.url + "/")
    pg.get_by_role("button", name="New experiment").click()
    pg.wait_for_selector("form.submit-form[data-presets=ready]", timeout=READY)
    pg.wait_for_function(
        "document.querySelector('p.model-size')?.textContent.includes('parameters')",
        timeout=READY,
    )
    assert pg.console_errors == [], pg.console_errors
    health = pg.locator("#health span")
    health.wait_for(timeout=READY)
    assert "1 worker · CPU" in health.inner_text(), health.inner_text()
    assert health.get_attribute("class") == "health-ok"


def test_phone_layout_without_overflow(stack, open_page, mixed, long_named):
    """At 390 px: no page scrolls sideways and nothing sticks out (wide tables scroll in their
    own box), the form's "start from" select stays inside the drawer, and the health line is
    shown."""
    engine, script = mixed
    pg = open_page(390, 844, is_mobile=True)
    for path, ready, name in (
        ("/", "runs", "phone-runs"),
        (f"/compare?runs={engine},{script}", "compare", "phone-compare"),
        (f"/runs/{engine}", "run", "phone-run"),
    ):
        pg.goto(stack.url + path)
        pg.wait_for_selector(f"body[data-ready={ready}]", timeout=READY)
        pg.wait_for_timeout(500)
        result = pg.evaluate(OVERFLOW_JS)
        assert result["scroll"] <= result["width"] and not result["wide"], (path, result)
        box = pg.locator("#health").bounding_box()
        assert box and box["width"] > 50 and "worker" in pg.locator("#health").inner_text()
        docs_shot(pg, name)
    pg.goto(stack.url + "/")
    pg.wait_for_selector("body[data-ready=runs]", timeout=READY)
    pg.get_by_role("button", name="New experiment").click()
    pg.wait_for_selector("form.submit-form[data-presets=ready]", timeout=READY)
    pg.select_option(
        "select[name=preset]", index=len(pg.locator("select[name=preset] option").all()) - 1
    )
    edges = pg.evaluate("""() => ({select: document.querySelector('select[name=preset]')
            .getBoundingClientRect().right,
        drawer: document.querySelector('aside.drawer').getBoundingClientRect().right,
        width: document.documentElement.clientWidth})""")
    assert edges["select"] <= edges["drawer"] <= edges["width"] + 0.5, edges
    result = pg.evaluate(OVERFLOW_JS)
    assert result["scroll"] <= result["width"] and not result["wide"], result
    assert not pg.console_errors, pg.console_errors


def test_group_rows_use_the_tables_accuracy_format(stack, open_page, long_named):
    """Grouped rows show accuracies as the plain rows do: "89.5% ± 1.2 pt", not 0.895 ± 0.012."""
    prefix, ids = long_named
    pg = open_page(1280, 800)
    pg.goto(
        f"{stack.url}/?q={prefix.split(' ')[-2]}&group=config.model.dropout.rate"
        "&cols=id,name,summary.test_acc_eval"
    )
    pg.wait_for_selector("tr.group-row", timeout=READY)
    rows = pg.evaluate("""() => [...document.querySelectorAll('tr.group-row')].map(tr =>
        ({value: JSON.parse(tr.dataset.group), text: tr.lastChild.textContent}))""")
    with stack.client() as c:
        runs = c.get("/api/runs", params={"ids": ",".join(map(str, ids))}).json()["data"]
    by_rate: dict[float, list[float]] = {}
    for r in runs:
        by_rate.setdefault(r["config"]["model"]["dropout"]["rate"], []).append(
            r["summary"]["test_acc_eval"]
        )
    for row in rows:
        accs = by_rate[row["value"]]
        mean = f"{100 * statistics.mean(accs):.1f}%"
        want = mean if len(accs) < 2 else f"{mean} ± {100 * statistics.stdev(accs):.1f} pt"
        assert row["text"] == want, (row, accs)
    assert not pg.console_errors, pg.console_errors


@pytest.fixture(scope="module")
def empty_stack(tmp_path_factory):
    """A stack with no run at all (no worker: nothing is trained)."""
    s = start_stack(tmp_path_factory.mktemp("dashboard-empty"), workers=0)
    yield s
    s.stop()


def test_empty_dashboard_opens_on_a_welcome_not_a_form(empty_stack, open_page):
    """With no runs the first screen says what bnlab measures and lists the studies; the form
    stays one click away (before: it opened by itself and filled the screen). Choosing a study
    opens the form with that study's preset."""
    pg = open_page(1280, 800)
    pg.goto(empty_stack.url + "/")
    pg.wait_for_selector("body[data-ready=runs]", timeout=READY)
    welcome = pg.locator(".empty-state")
    welcome.wait_for(timeout=READY)
    assert pg.locator("aside.drawer").is_hidden() and pg.locator("form.submit-form").is_hidden()
    assert "variance shift" in welcome.inner_text()
    with empty_stack.client() as c:
        presets = c.get("/api/presets").json()
    studies = welcome.locator(".study-list button.link")
    studies.first.wait_for(timeout=READY)
    assert studies.all_inner_texts() == [p["title"] for p in presets]
    studies.nth(1).click()
    pg.wait_for_selector("form.submit-form[data-presets=ready]", timeout=READY)
    pg.wait_for_function(
        "t => { const s = document.querySelector('select[name=preset]');"
        " return s.options[s.selectedIndex].text === t; }",
        arg=presets[1]["title"],
        timeout=READY,
    )
    assert pg.locator("aside.drawer").is_visible()
    assert not pg.console_errors, pg.console_errors
