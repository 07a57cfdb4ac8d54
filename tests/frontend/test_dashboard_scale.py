"""The dashboard for a researcher with many runs, in Chromium against the real stack: the runs
table's sort, column picker, group-by and bulk tag (read from the DOM and checked against the
API), the compare view's shared zoom with its re-fetch, hiding a run in every chart, group
bands checked against an independent mean/sd, smoothing's faint raw curve, the sweep view's
brushing, phones at 390 px, the 404 page, compressed static files, Plotly only on chart pages,
no cloud button, the dark theme, and the run page's lr axis, first-probe clipping, cancel status
and export buttons. One stack (the session's) and one set of seeded runs for the module.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import uuid

import pytest
from dashboard_stack import seed_runs

PREFIX = f"scale-{uuid.uuid4().hex[:6]} "
READY = 60_000
ORDER_JS = (
    "JSON.stringify([...document.querySelectorAll('table.runs tbody tr')]"
    ".map(t => Number(t.dataset.runId)))"
)


@pytest.fixture(scope="module")
def runs(stack):
    """20 synthetic finished runs (5 rates x 2 placements x 2 seeds), 3 BN layers x 40 probes,
    named with a prefix unique to this module."""
    return seed_runs(stack.database_url, n_runs=20, n_layers=3, n_steps=40, name_prefix=PREFIX)


def api_runs(stack, **query) -> list[dict]:
    with stack.client() as c:
        return c.get("/api/runs", params={"q": PREFIX.strip(), "limit": 500, **query}).json()[
            "data"
        ]


def shown_ids(page) -> list[int]:
    return page.evaluate("""() => [...document.querySelectorAll('table.runs tbody tr[data-run-id]')]
        .map(tr => Number(tr.dataset.runId))""")


def wait_rows(page, n: int) -> None:
    page.wait_for_function(
        f"document.querySelectorAll('table.runs tbody tr[data-run-id]').length === {n}",
        timeout=READY,
    )


def test_sort_by_summary_column_and_keep_columns_in_url(stack, page, runs):
    """Clicking a summary column's header sorts the rows as the API sorts them (ascending, then
    descending); a column picked in the picker is added to the URL and survives a reload."""
    page.goto(
        f"{stack.url}/?q={PREFIX.strip()}&cols=id,name,summary.test_acc_eval,config.model.dropout.rate"
    )
    wait_rows(page, len(runs))
    page.click('th button[data-sort="summary.test_acc_eval"]')
    page.wait_for_function("location.search.includes('sort=summary.test_acc_eval')")
    up = [r["id"] for r in api_runs(stack, sort="summary.test_acc_eval")]
    page.wait_for_function(
        f"{ORDER_JS} === '{json.dumps(up).replace(' ', '')}'",
        timeout=READY,
    )
    accs = [r["summary"]["test_acc_eval"] for r in api_runs(stack, sort="summary.test_acc_eval")]
    assert accs == sorted(accs)  # the API's order is the values' order
    page.click('th button[data-sort="summary.test_acc_eval"]')
    page.wait_for_function("location.search.includes('sort=-summary.test_acc_eval')")
    down = [r["id"] for r in api_runs(stack, sort="-summary.test_acc_eval")]
    page.wait_for_function(
        f"{ORDER_JS} === '{json.dumps(down).replace(' ', '')}'",
        timeout=READY,
    )
    assert (
        page.get_attribute('th[aria-sort="descending"] button', "data-sort")
        == "summary.test_acc_eval"
    )

    page.click(".column-picker summary")
    page.check('.column-option[data-key="config.train.seed"] input')
    page.wait_for_function(
        "new URL(location.href).searchParams.get('cols').split(',').includes('config.train.seed')"
    )
    page.reload()
    wait_rows(page, len(runs))
    headers = page.evaluate(
        "() => [...document.querySelectorAll('table.runs thead th')].map(th => th.title)"
    )
    assert headers[-1] == "config.train.seed", headers
    seeds = page.evaluate(
        "() => [...document.querySelectorAll('table.runs tbody tr')]"
        ".map(tr => tr.lastChild.textContent)"
    )
    by_id = {r["id"]: str(r["config"]["train"]["seed"]) for r in api_runs(stack)}
    assert seeds == [by_id[i] for i in shown_ids(page)]
    # The table's render time is measured in benchmarks/bench_scale.py, not bounded here.
    assert not page.errors, page.errors


def test_group_by_config_field_shows_n_mean_sd(stack, page, runs):
    """Grouping by dropout rate: one collapsible row per rate with n and mean ± sd of the eval
    accuracy, equal to Python's statistics over the API's runs; opening a group lists its runs."""
    page.goto(
        f"{stack.url}/?q={PREFIX.strip()}&group=config.model.dropout.rate"
        "&cols=id,name,summary.test_acc_eval"
    )
    page.wait_for_selector("tr.group-row", timeout=READY)
    rows = page.evaluate("""() => [...document.querySelectorAll('tr.group-row')].map(tr =>
        ({value: JSON.parse(tr.dataset.group), n: Number(tr.dataset.n),
          cells: [...tr.children].map(td => td.textContent)}))""")
    expected = {}
    for r in api_runs(stack):
        expected.setdefault(r["config"]["model"]["dropout"]["rate"], []).append(
            r["summary"]["test_acc_eval"]
        )
    assert [row["value"] for row in rows] == sorted(expected)
    for row in rows:
        accs = expected[row["value"]]
        assert row["n"] == len(accs)
        mean, sd = statistics.mean(accs), statistics.stdev(accs)
        # accuracies as the plain rows show them: a percentage, the sd in points
        assert row["cells"][-1] == f"{100 * mean:.1f}% ± {100 * sd:.1f} pt", row
    page.locator("tr.group-row button.group-toggle").first.click()
    wait_rows(page, rows[0]["n"])
    listed = {
        r["id"]
        for r in api_runs(stack)
        if r["config"]["model"]["dropout"]["rate"] == rows[0]["value"]
    }
    assert set(shown_ids(page)) == listed
    assert not page.errors, page.errors


def test_bulk_tag_selected_runs(stack, page, runs):
    """Selecting runs and pressing Tag adds the tag to exactly those runs."""
    page.goto(f"{stack.url}/?q={PREFIX.strip()}")
    wait_rows(page, len(runs))
    picked = shown_ids(page)[:3]
    for run_id in picked:
        page.check(f'input[aria-label="select run {run_id}"]')
    tag = f"pick{uuid.uuid4().hex[:4]}"
    page.fill('input[name="bulk-tag"]', tag)
    page.get_by_role("button", name="Tag", exact=True).click()
    page.wait_for_selector(".bulk-message .notice", timeout=READY)
    assert sorted(r["id"] for r in api_runs(stack, tag=tag)) == sorted(picked)
    page.get_by_role("button", name="Clear").click()


def compare_url(stack, runs, extra=""):
    return f"{stack.url}/compare?runs={','.join(map(str, runs))}{extra}"


def test_shared_zoom_and_refetch_in_window(stack, page, runs):
    """Zooming one chart sets the same x range on every time chart, and the series are fetched
    again inside that step window (every drawn point inside it, with the window's detail)."""
    page.goto(compare_url(stack, runs[:4]))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    before = page.evaluate("document.getElementById('chart-layer-0').data[0].x.length")
    page.evaluate(
        "() => Plotly.relayout(document.getElementById('chart-layer-0'),"
        " {'xaxis.range': [200, 400]})"
    )
    page.wait_for_function(
        "document.querySelector('.compare-body').dataset.stepWindow === '200,400'", timeout=READY
    )
    charts = page.evaluate("""() => ['chart-layer-0', 'chart-layer-1', 'chart-layer-2',
                                      'chart-accuracy'].map(id => {
        const d = document.getElementById(id);
        return {range: d.layout.xaxis.range,
                xs: d.data.filter(t => !t.meta.band).flatMap(t => t.x)};
    })""")
    for chart in charts:
        assert chart["range"] == [200, 400]
        assert chart["xs"] and min(chart["xs"]) >= 200 and max(chart["xs"]) <= 400
    assert before == 40 and len(charts[0]["xs"]) >= 11  # steps 200..400 every 20 (seeded)
    # shared zoom off: zooming one chart leaves the others alone
    page.uncheck('input[name="zoom"]')
    page.evaluate(
        "() => Plotly.relayout(document.getElementById('chart-layer-1'),"
        " {'xaxis.range': [240, 300]})"
    )
    page.wait_for_timeout(500)
    assert page.evaluate("document.getElementById('chart-layer-0').layout.xaxis.range") == [
        200,
        400,
    ]
    assert not page.errors, page.errors


def test_hidden_run_absent_from_every_chart(stack, page, runs):
    """Hiding a run from the legend removes it from every chart on the page at once, and the
    choice is kept in the URL."""
    ids = runs[:3]
    page.goto(compare_url(stack, ids))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    page.locator(f'.legend-item[data-key="{ids[1]}"] .hide-toggle').click()
    page.wait_for_function(f"location.search.includes('hide={ids[1]}')")
    page.wait_for_timeout(300)
    drawn = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(d =>
        ({id: d.id, runs: [...new Set(d.data.flatMap(t => (t.meta && t.meta.runs) || []))]}))""")
    assert len(drawn) >= 5
    for chart in drawn:
        assert ids[1] not in chart["runs"], chart
    layer = next(c for c in drawn if c["id"] == "chart-layer-0")
    assert sorted(layer["runs"]) == sorted([ids[0], ids[2]])
    page.reload()
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    assert ids[1] not in page.evaluate(
        "document.getElementById('chart-accuracy').data.flatMap(t => t.meta.runs)"
    )


def test_group_by_field_with_sd_band(stack, page, runs):
    """group=model.dropout.rate&band=sd: one mean line and a mean ± sd band per rate, equal to
    the mean and sample sd of the member runs' train_var read from the API."""
    page.goto(compare_url(stack, runs, "&group=model.dropout.rate&band=sd"))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    traces = page.evaluate("""() => document.getElementById('chart-layer-0').data
        .filter(t => t.meta.series === 'train_var')
        .map(t => ({runs: t.meta.runs, band: t.meta.band || null,
          fill: t.fill || '', x: t.x, y: t.y}))""")
    with stack.client() as c:
        body = c.get(
            "/api/compare", params={"runs": ",".join(map(str, runs)), "layer_keys": "train_var"}
        ).json()
    series = {e["run"]["id"]: e["layers"]["layers"][0] for e in body["runs"]}
    groups = {tuple(t["runs"]) for t in traces}
    assert len(groups) == 5 and all(len(g) == 4 for g in groups)
    for group in groups:
        mine = [t for t in traces if tuple(t["runs"]) == group]
        mean = next(t for t in mine if not t["band"])
        hi = next(t for t in mine if t["band"] == "sd" and not t["fill"])
        lo = next(t for t in mine if t["fill"] == "tonexty")
        for k in (0, 17, 39):
            vals = [series[i]["train_var"][k] for i in group]
            assert series[group[0]]["step"][k] == mean["x"][k]
            assert mean["y"][k] == pytest.approx(statistics.mean(vals), rel=1e-9)
            assert hi["y"][k] == pytest.approx(
                statistics.mean(vals) + statistics.stdev(vals), rel=1e-9
            )
            assert lo["y"][k] == pytest.approx(
                statistics.mean(vals) - statistics.stdev(vals), rel=1e-9
            )


def test_smoothing_keeps_faint_raw_curve(stack, page, runs):
    """With smoothing, each curve has a faint raw twin carrying the unsmoothed values."""
    page.goto(compare_url(stack, runs[:2], "&smooth=0.8"))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    traces = page.evaluate("""() => document.getElementById('chart-layer-0').data.map(t =>
        ({runs: t.meta.runs, series: t.meta.series, raw: Boolean(t.meta.raw),
          opacity: t.opacity ?? 1, y: t.y}))""")
    with stack.client() as c:
        body = c.get("/api/compare", params={"runs": runs[0], "layer_keys": "train_var"}).json()
    stored = body["runs"][0]["layers"]["layers"][0]["train_var"]
    raw = next(
        t for t in traces if t["raw"] and t["runs"] == [runs[0]] and t["series"] == "train_var"
    )
    smooth = next(
        t for t in traces if not t["raw"] and t["runs"] == [runs[0]] and t["series"] == "train_var"
    )
    assert raw["y"] == stored and raw["opacity"] < 0.5
    assert smooth["y"] != stored and smooth["y"][0] == pytest.approx(stored[0])


def test_sweep_brushing_selects_runs_for_compare(stack, page, runs):
    """Brushing the dropout-rate axis of the parallel coordinates selects exactly the runs in
    that range; Compare opens them."""
    page.goto(f"{stack.url}/sweep?runs={','.join(map(str, runs))}")
    page.wait_for_selector("body[data-ready=sweep]", timeout=READY)
    labels = page.evaluate(
        "document.getElementById('chart-parcoords').data[0].dimensions.map(d => d.label)"
    )
    k = labels.index("model.dropout.rate")
    page.evaluate(
        f"() => Plotly.restyle(document.getElementById('chart-parcoords'),"
        f" {{'dimensions[{k}].constraintrange': [[0.25, 0.45]]}})"
    )
    page.wait_for_function("document.querySelector('.sweep-selected').dataset.ids !== undefined")
    picked = sorted(int(i) for i in page.get_attribute(".sweep-selected", "data-ids").split(","))
    expected = sorted(
        r["id"] for r in api_runs(stack) if 0.25 <= r["config"]["model"]["dropout"]["rate"] <= 0.45
    )
    assert picked == expected and len(picked) == 8
    page.get_by_role("button", name=f"Compare selected ({len(picked)})").click()
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    assert page.url.endswith("/compare?runs=" + ",".join(map(str, picked)))
    assert not page.errors, page.errors


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    yield pg
    context.close()


OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= width + 1) return false;
    // inside a box that scrolls by itself (a wide table): that box scrolls, not the page
    for (let p = e.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      const page = p === document.body || p === document.documentElement;
      if ((o === 'auto' || o === 'scroll' || o === 'hidden') && !page) return false;
    }
    return true;
  });
  return {width, scroll: document.scrollingElement.scrollWidth,
          wide: wide.slice(0, 5).map(e =>
            e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))};
}"""


def test_no_horizontal_scroll_at_390px(stack, phone, runs):
    """At 390 px no page scrolls sideways and no element sticks out of the screen."""
    for path, ready in (
        ("/", "runs"),
        (f"/compare?runs={runs[0]},{runs[1]}", "compare"),
        (f"/runs/{runs[0]}", "run"),
        (f"/sweep?runs={','.join(map(str, runs[:6]))}", "sweep"),
    ):
        phone.goto(stack.url + path)
        phone.wait_for_selector(f"body[data-ready={ready}]", timeout=READY)
        phone.wait_for_timeout(300)
        result = phone.evaluate(OVERFLOW_JS)
        assert result["scroll"] <= result["width"] and not result["wide"], (path, result)
    assert not phone.errors, phone.errors


def test_unknown_path_is_a_404_page(stack, page):
    res = page.goto(f"{stack.url}/no/such/page")
    assert res.status == 404
    assert "Page not found" in page.locator("h1").inner_text()
    assert page.get_by_role("link", name="Runs").count() >= 1


def test_static_files_compressed_and_plotly_only_on_chart_pages(stack, page, runs):
    """The runs table loads no Plotly; a chart page loads it gzip-compressed (the browser's
    resource timing: bytes on the wire below the decoded size); the modebar has no cloud button."""
    page.goto(f"{stack.url}/?q={PREFIX.strip()}")
    wait_rows(page, len(runs))
    assert page.evaluate("typeof window.Plotly") == "undefined"
    assert not page.evaluate(
        "performance.getEntriesByType('resource').some(e => e.name.includes('plotly.min.js'))"
    )
    page.goto(compare_url(stack, runs[:2]))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    sizes = page.evaluate("""() => performance.getEntriesByType('resource')
        .filter(e => e.name.includes('plotly.min.js'))
        .map(e => ({wire: e.encodedBodySize, body: e.decodedBodySize}))""")
    assert sizes and sizes[0]["wire"] < 0.4 * sizes[0]["body"], sizes
    with stack.client() as c:
        res = c.get("/js/views/compare.js", headers={"Accept-Encoding": "gzip"})
        assert res.headers["content-encoding"] == "gzip"
    page.hover("#chart-layer-0")
    assert page.locator(".modebar-btn").count() > 0
    assert (
        page.locator(
            '.modebar-btn[data-attr*="Cloud"], .modebar-btn[data-title*="Cloud"], '
            '.modebar-btn[data-title*="Chart Studio"]'
        ).count()
        == 0
    )
    assert (
        page.evaluate("document.getElementById('chart-layer-0')._context.showSendToCloud") is False
    )


def test_dark_theme_follows_browser(stack, browser, runs):
    context = browser.new_context(color_scheme="dark", viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.goto(compare_url(stack, runs[:2]))
    pg.wait_for_selector("body[data-ready=compare]", timeout=READY)
    background = pg.evaluate("getComputedStyle(document.body).backgroundColor")
    paper = pg.evaluate("document.getElementById('chart-layer-0').layout.paper_bgcolor")
    context.close()
    channels = [int(v) for v in background[background.index("(") + 1 : -1].split(",")[:3]]
    assert max(channels) < 60, background
    assert paper.lower() == "#161a20"


def test_run_page_lr_axis_first_probe_cancel_and_exports(stack, page, runs):
    """lr is drawn on a log axis; a first-probe spike in the shift is left out of the shift
    chart's y range; a user's cancel shows as a status, not an error text; the ONNX button
    appears only when model.onnx exists."""
    spiky, cancelled = runs[5], runs[6]
    db = sqlite3.connect(stack.data_dir / "bnlab.db")
    with db:
        db.execute("UPDATE layer_stats SET shift = 80.0 WHERE run_id = ? AND step = 0", (spiky,))
        db.execute(
            "UPDATE runs SET status = 'cancelled', error = 'cancelled', cancel_requested = 1 "
            "WHERE id = ?",
            (cancelled,),
        )
    db.close()
    page.goto(f"{stack.url}/runs/{spiky}")
    page.wait_for_selector("body[data-ready=run]", timeout=READY)
    assert page.evaluate("document.getElementById('chart-lr').layout.yaxis.type") == "log"
    shift = page.evaluate("""() => { const d = document.getElementById('chart-shift');
        return {range: d.layout.yaxis.range, ys: d.data.flatMap(t => t.y.slice(1))}; }""")
    assert shift["range"][1] < 80 and shift["range"][1] >= max(shift["ys"])
    assert page.get_by_role("button", name="Export .onnx").count() == 0
    folder = stack.data_dir / "exports" / f"run-{spiky}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    page.reload()
    page.wait_for_selector("body[data-ready=run]", timeout=READY)
    assert page.get_by_role("button", name="Export .onnx").count() == 1
    page.goto(f"{stack.url}/runs/{cancelled}")
    page.wait_for_selector("body[data-ready=run]", timeout=READY)
    assert page.locator(".error-text").count() == 0
    assert "Cancelled by a user" in page.locator(".run-top .notice-info").inner_text()
    assert not page.errors, page.errors


def test_deep_net_layers_by_stage(stack, page):
    """A 3-stage net of 54 BN layers named by place: the layer menu lists no layer until a stage
    is picked, then only that stage's layers; at most 12 layer charts are drawn; the shift-by-depth
    chart has every layer with ticks at the stage starts."""
    ids = seed_runs(
        stack.database_url, n_runs=2, n_layers=54, n_steps=10, name_prefix=PREFIX + "deep "
    )
    names = [f"stage{s}.unit{u}.bn{k}" for s in (1, 2, 3) for u in range(1, 10) for k in (1, 2)]
    db = sqlite3.connect(stack.data_dir / "bnlab.db")
    with db:
        for run_id in ids:
            db.execute(
                "UPDATE runs SET layer_names = ?, summary = NULL WHERE id = ?",
                (json.dumps(names), run_id),
            )
    db.close()
    page.goto(compare_url(stack, ids))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    stages = page.evaluate(
        "[...document.querySelector('select[name=stage]').options].map(o => o.value)"
    )
    assert stages == ["all", "stage1", "stage2", "stage3"]
    assert page.locator("select[name=layer] option").count() == 1  # "all 54 layers" only
    assert page.locator('[id^="chart-layer-"]').count() == 12
    shift = page.evaluate("""() => { const d = document.getElementById('chart-shift');
        return {n: d.data[0].x.length, ticks: d.layout.xaxis.tickvals,
                text: d.layout.xaxis.ticktext}; }""")
    assert shift == {"n": 54, "ticks": [0, 18, 36], "text": ["stage1", "stage2", "stage3"]}
    page.select_option("select[name=stage]", "stage2")
    page.wait_for_function("location.search.includes('stage=stage2')")
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    layer_options = page.evaluate(
        "[...document.querySelector('select[name=layer]').options].map(o => o.text)"
    )
    assert len(layer_options) == 19 and all("stage2." in t for t in layer_options[1:])
    drawn = page.evaluate(
        "[...document.querySelectorAll('[id^=chart-layer-]')].map(d => Number(d.id.split('-')[2]))"
    )
    assert drawn == list(range(18, 30))
    assert not page.errors, page.errors


def test_run_page_of_a_300_layer_net_by_stage(stack, page):
    """The run page of a net with 298 BN layers named by place (3 stages x 33 bottleneck units
    x 3 BNs, head.bn): a stage menu, no layer names until a stage is picked, 12 layer charts
    and 12 curves per per-layer chart, a shift-by-depth chart with every layer and ticks at the
    stage starts, the final shifts in one collapsed table per stage; picking a stage draws
    that stage's first 12 layers, picking a layer draws it alone."""
    (run_id,) = seed_runs(
        stack.database_url, n_runs=1, n_layers=298, n_steps=8, name_prefix=PREFIX + "deep-run "
    )
    names = [
        f"stage{s}.unit{u}.bn{k}" for s in (1, 2, 3) for u in range(1, 34) for k in (1, 2, 3)
    ] + ["head.bn"]
    shifts = {n: 1.0 + 0.001 * i for i, n in enumerate(names)}
    summary = {
        "test_acc_eval": 0.9,
        "shift_by_layer": shifts,
        "shift_per_channel": {n: [v] * 16 for n, v in shifts.items()},
    }
    db = sqlite3.connect(stack.data_dir / "bnlab.db")
    with db:
        db.execute(
            "UPDATE runs SET layer_names = ?, summary = ? WHERE id = ?",
            (json.dumps(names), json.dumps(summary), run_id),
        )
    db.close()
    page.goto(f"{stack.url}/runs/{run_id}")
    page.wait_for_selector("body[data-ready=run]", timeout=READY)
    options = "n => [...document.querySelector(`select[name=${n}]`).options].map(o => o.text)"
    assert page.evaluate(options, "stage") == [
        "all stages",
        "stage1 (99)",
        "stage2 (99)",
        "stage3 (99)",
        "head (1)",
    ]
    assert page.evaluate(options, "layer") == ["all 298 layers (first 12 drawn)"]
    drawn = (
        "() => [...document.querySelectorAll('[id^=chart-layer-]')]"
        ".map(d => Number(d.id.split('-')[2]))"
    )
    assert page.evaluate(drawn) == list(range(12))
    assert page.evaluate("document.getElementById('chart-shift').data.length") == 12
    assert page.evaluate("document.getElementById('chart-hist').data.length") == 12
    depth = page.evaluate("""() => { const d = document.getElementById('chart-shift-depth');
        return {x: d.data[0].x, y: d.data[0].y, ticks: d.layout.xaxis.tickvals,
                text: d.layout.xaxis.ticktext}; }""")
    assert depth["x"] == list(range(298))
    assert depth["y"] == pytest.approx([shifts[n] for n in names])
    assert depth["ticks"] == [0, 99, 198, 297]
    assert depth["text"] == ["stage1", "stage2", "stage3", "head"]
    stages = page.locator("details.stage-shifts > summary").all_inner_texts()
    assert [t.split(":")[0] for t in stages] == ["stage1", "stage2", "stage3", "head"]
    assert "99 BN layers" in stages[1]
    assert page.locator("details.stage-shifts[open]").count() == 0  # collapsed
    # the story above the charts: its shift table and its layer menu go by stage as well
    page.wait_for_selector("select[name=story-stage]", timeout=READY)
    assert page.evaluate(options, "story-stage") == [
        "stage1 (99)",
        "stage2 (99)",
        "stage3 (99)",
        "head (1)",
    ]
    assert page.locator("select[name=story-layer] option").count() == 99
    assert page.locator("details.story-stage").count() == 4

    page.select_option("select[name=stage]", "stage2")
    page.wait_for_function("location.search.includes('stage=stage2')")
    page.wait_for_function(
        "document.querySelectorAll('select[name=layer] option').length === 100", timeout=READY
    )
    layer_options = page.evaluate(options, "layer")
    assert all(t.split(": ")[1].startswith("stage2.") for t in layer_options[1:])
    page.wait_for_function("document.getElementById('chart-layer-99') !== null", timeout=READY)
    assert page.evaluate(drawn) == list(range(99, 111))
    page.select_option("select[name=layer]", "150")
    page.wait_for_function("location.search.includes('layer=150')")
    page.wait_for_function(
        "document.querySelectorAll('[id^=chart-layer-]').length === 1", timeout=READY
    )
    assert page.evaluate(drawn) == [150]
    assert "stage2.unit18.bn1" in page.locator("#chart-layer-150").get_attribute("aria-label") + (
        page.evaluate("document.getElementById('chart-layer-150').layout.title.text")
    )
    page.goto(page.url)  # the pick lives in the URL
    page.wait_for_selector("body[data-ready=run]", timeout=READY)
    assert page.evaluate(drawn) == [150]
    assert not page.errors, page.errors


def test_submit_errors_summarised_client_and_server(stack, page):
    """A value the browser cannot read (epochs "abc") and one only the server refuses (rate
    1.5) are both reported: at their fields and in a summary at the top of the form, which is
    scrolled into view; nothing is submitted."""
    page.set_viewport_size({"width": 1200, "height": 600})
    page.goto(stack.url + "/")
    page.wait_for_selector("body[data-ready=runs]", timeout=READY)
    if page.locator("form.submit-form").is_hidden():
        page.get_by_role("button", name="New experiment").click()
    page.wait_for_selector('select[name="preset"] option', state="attached")
    page.fill('input[name="train.epochs"]', "abc")
    page.fill('input[name="model.dropout.rate"]', "1.5")
    page.get_by_role("button", name="Submit run").click()
    summary = page.locator(".form-errors-summary")
    summary.wait_for(timeout=READY)
    items = summary.locator("li").all_inner_texts()
    assert any(t.startswith("train.epochs") for t in items), items
    # the server's own message (POST /api/describe's 422), not a client check
    assert any(t.startswith("model.dropout.rate") and "[0, 1)" in t for t in items), items
    box = page.evaluate(
        "document.querySelector('.form-errors-summary').getBoundingClientRect().top"
    )
    assert 0 <= box < 600  # scrolled into view
    assert page.locator(".form-result a").count() == 0


def test_x_axis_by_epoch_and_wall_time(stack, page, runs):
    """x=epoch draws the accuracy against the run's own recorded epochs and the layer charts at
    the same epochs; x=wall against the probes' recorded wall_time (seconds since the first
    probe, a pause included), and step / steps_per_s for a run recorded without wall times."""
    run_id = runs[0]
    with stack.client() as c:
        metrics = c.get(f"/api/runs/{run_id}/metrics", params={"keys": "epoch"}).json()
        pace = c.get(f"/api/runs/{run_id}").json()["summary"]["steps_per_s"]
    page.goto(compare_url(stack, [run_id], "&x=epoch"))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    acc_x = page.evaluate("document.getElementById('chart-accuracy').data[0].x")
    layer_x = page.evaluate("document.getElementById('chart-layer-0').data[0].x")
    assert acc_x == pytest.approx(metrics["epoch"]) and layer_x == pytest.approx(metrics["epoch"])
    assert (
        page.evaluate("document.getElementById('chart-accuracy').layout.xaxis.title.text")
        == "epoch"
    )
    page.select_option("select[name=x]", "wall")
    page.wait_for_function("location.search.includes('x=wall')")
    page.wait_for_function(
        "document.getElementById('chart-accuracy')?.layout?.xaxis?.title?.text"
        "?.startsWith('wall time')",
        timeout=READY,
    )
    wall_x = page.evaluate("document.getElementById('chart-accuracy').data[0].x")
    assert wall_x == pytest.approx([s / pace for s in metrics["step"]])

    # A fresh run (an ended run's series are cached once read): probes 0.5 s apart (20 steps),
    # and a 100 s pause after step 400.
    (stamped,) = seed_runs(
        stack.database_url, n_runs=1, n_layers=2, n_steps=40, name_prefix=PREFIX + "wall "
    )
    db = sqlite3.connect(stack.data_dir / "bnlab.db")
    with db:
        db.execute(
            "UPDATE run_metrics SET wall_time = 1.7e9 + step * 0.025 "
            "+ CASE WHEN step > 400 THEN 100 ELSE 0 END WHERE run_id = ?",
            (stamped,),
        )
    db.close()
    page.goto(compare_url(stack, [stamped], "&x=wall"))
    page.wait_for_selector("body[data-ready=compare]", timeout=READY)
    steps = metrics["step"]
    expected = [st * 0.025 + (100 if st > 400 else 0) for st in steps]
    for chart in ("chart-accuracy", "chart-layer-0"):
        xs = page.evaluate(f"document.getElementById('{chart}').data[0].x")
        assert xs == pytest.approx(expected), chart
    assert len(steps) == 40
