"""The dashboard in a real browser (Debian's Chromium via Playwright) against the real stack:
submit through the form, watch the run finish live, compare runs from the page's Plotly data,
user text shown as text, errors at the field, the token asked once."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from dashboard_stack import (
    REPO,
    screenshot,
    seed_runs,
    start_stack,
    submit,
    tiny_config,
    wait_finished,
)

XSS_NAME = '<img src=x onerror="window.__xss=1;alert(1)">'
RUN_DONE_MS = 240_000


def open_form(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("table.runs")
    # The first list answer may open the form by itself (no runs yet): decide after it.
    page.wait_for_function("document.querySelector('.table-status')?.textContent.trim()")
    if page.locator("form.submit-form").is_hidden():
        page.get_by_role("button", name="New experiment").click()
    page.locator("form.submit-form").wait_for(state="visible")
    page.wait_for_selector('select[name="preset"] option', state="attached")


def fill_tiny(page, name: str) -> None:
    page.fill('input[name="name"]', name)
    page.select_option('select[name="dataset.name"]', "digits")
    page.fill('input[name="dataset.limit"]', "256")
    page.fill('input[name="model.widths"]', "32")
    page.fill('input[name="train.epochs"]', "2")
    page.fill('input[name="train.batch_size"]', "32")
    page.fill('input[name="probe.every_steps"]', "4")
    page.fill('input[name="probe.eval_batches"]', "1")
    page.fill('input[name="probe.train_mode_test_batch_sizes"]', "1, 8")


def submitted_id(page) -> int:
    link = page.locator(".form-result a").first
    link.wait_for(timeout=30_000)
    return int(link.inner_text().lstrip("#"))


@pytest.fixture(scope="module")
def two_runs(stack):
    """Two finished small runs that differ in where dropout sits (before BN vs head only)."""
    common = {
        "dataset.limit": 1024,
        "model.widths": [64, 64],
        "train.epochs": 3,
        "probe.every_steps": 6,
    }
    ids = [
        submit(stack, tiny_config("dropout before BN", **common)),
        submit(
            stack,
            tiny_config(
                "head dropout only",
                **common,
                **{"model.block": ["linear", "batchnorm", "activation"], "model.head_dropout": 0.5},
            ),
        ),
    ]
    for run_id in ids:
        assert wait_finished(stack, run_id)["status"] == "succeeded", stack.log_tail()
    return ids


def test_submit_run_through_form_finishes_without_reload(stack, page):
    """A run submitted through the form appears in the table and reaches `succeeded` in place
    (SSE/poll updates): the page is never reloaded."""
    open_form(page, stack.url)
    page.evaluate("window.__noReload = 'still here'")
    fill_tiny(page, "form run")
    page.get_by_role("button", name="Submit run").click()
    run_id = submitted_id(page)
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    row.wait_for(timeout=15_000)
    page.wait_for_selector(
        f'tr[data-run-id="{run_id}"][data-status="succeeded"]', timeout=RUN_DONE_MS
    )
    assert page.evaluate("window.__noReload") == "still here"
    assert row.locator(".status").inner_text() == "succeeded"
    page.wait_for_function(
        "window.__bnlabStreams.open === 0", timeout=30_000
    )  # nothing live: closed
    assert not page.errors, page.errors
    screenshot(page, "runs-table")


def test_close_stream_when_run_ends(stack, page):
    """The run page follows a live run over SSE; its Cancel button ends the run, the page shows
    `cancelled` without a reload and closes its EventSource."""
    run_id = submit(stack, tiny_config("long run to cancel", **{"train.epochs": 200}))
    page.goto(f"{stack.url}/runs/{run_id}")
    page.wait_for_function(
        "window.__bnlabStreams && window.__bnlabStreams.open === 1", timeout=30_000
    )
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_selector(".facts .status-cancelled", timeout=60_000)
    page.wait_for_function("window.__bnlabStreams.open === 0", timeout=30_000)
    assert not page.errors, page.errors


def test_draw_train_and_inference_traces_for_both_runs(stack, page, two_runs):
    """The compare view of two runs draws, in every BN layer chart, a train_var (solid) and an
    eval_var (dashed) trace for each run, named after the run."""
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, two_runs))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    traces = page.evaluate("""() => [...document.querySelectorAll('[id^="chart-layer-"]')]
        .map(div => div.data.map(t => ({name: t.name, runs: t.meta.runs, series: t.meta.series,
                                        dash: t.line.dash, n: t.x.length})))""")
    assert traces, "no BN layer chart was drawn"
    for chart in traces:
        for run_id in two_runs:
            mine = [t for t in chart if t["runs"] == [run_id]]
            assert {(t["series"], t["dash"]) for t in mine} >= {
                ("train_var", "solid"),
                ("eval_var", "dash"),
            }
            assert all(t["name"].startswith(f"#{run_id} ") and t["n"] > 0 for t in mine), mine
    assert not page.errors, page.errors
    shot = screenshot(page, "compare")
    if os.environ.get("BNLAB_DOCS_SCREENSHOT") == "1":  # refresh the README's picture on request
        shutil.copyfile(shot, REPO / "docs" / "screenshot-compare.png")


def test_load_compare_view_in_one_request(stack, page, two_runs):
    """The compare view asks GET /api/compare once (not three requests per run); a missing run
    in the link is named in a warning while the others are drawn."""
    asked = []
    page.on("request", lambda req: asked.append(req.url) if "/api/" in req.url else None)
    missing = 2_000_000_000
    page.goto(f"{stack.url}/compare?runs={two_runs[0]},{missing},{two_runs[1]}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    compare = [u for u in asked if "/api/compare?" in u]
    per_run = [u for u in asked if "/api/runs/" in u]
    assert len(compare) == 2 and not per_run, asked  # the 404 naming the missing id, then the rest
    assert "layer_keys=train_var%2Ceval_var%2Crunning_var%2Cshift" in compare[-1], compare
    assert f"#{missing}" in page.locator(".notice-warn").first.inner_text()
    drawn = page.evaluate("""() => [...new Set(
        [...document.querySelectorAll('[id^="chart-layer-"]')]
            .flatMap(div => div.data.flatMap(t => t.meta.runs)))]""")
    assert sorted(drawn) == sorted(two_runs)
    assert not page.errors, page.errors


def test_label_runs_by_differing_fields(stack, page, two_runs):
    """The config diff lists only fields that differ, and the legend names runs by them."""
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, two_runs))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    paths = page.locator("table.diff td.path").all_inner_texts()
    assert set(paths) == {"model.block", "model.head_dropout"}, paths
    labels = page.locator(".legend-label").all_inner_texts()
    assert all("head_dropout=" in label for label in labels), labels


def test_show_run_name_as_text(stack, page):
    """A run named with HTML shows that HTML literally in the table, run page and compare view;
    no element is injected and no script runs."""
    run_id = submit(stack, tiny_config(XSS_NAME, tags=["<b>bold</b>"]))
    for path in ("/", f"/runs/{run_id}", f"/compare?runs={run_id}"):
        page.goto(stack.url + path)
        page.wait_for_selector(".run-name", timeout=20_000)
        assert XSS_NAME in page.locator(".run-name").all_inner_texts(), path
        assert page.locator('img[src="x"]').count() == 0, path
        assert page.locator("b").count() == 0, path
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    assert not page.dialogs, page.dialogs


def test_show_server_error_at_field(stack, page):
    """A value the server refuses (422) is reported next to the field its path names."""
    open_form(page, stack.url)
    fill_tiny(page, "bad rate")
    page.fill('input[name="model.dropout.rate"]', "1.5")
    page.get_by_role("button", name="Submit run").click()
    error = page.locator('.field[data-path="model.dropout.rate"] .field-error')
    error.wait_for(timeout=30_000)
    # The registry's message names the field, the range the kind allows and the value refused.
    text = error.inner_text()
    assert "model.dropout.rate must be in [0, 1)" in text and "got 1.5" in text
    assert page.locator(".form-error").inner_text() == ""  # at the field, not only at the top
    assert page.locator(".form-result a").count() == 0


def test_count_sweep_runs(stack, page):
    """The sweep builder shows how many runs the grid x seeds makes."""
    open_form(page, stack.url)
    page.get_by_role("button", name="+ field").click()
    row = page.locator(".sweep-row").last
    row.locator(".sweep-path").fill("model.dropout.rate")
    row.locator(".sweep-values").fill("0.1, 0.3, 0.5")
    page.fill('input[name="sweep.seeds"]', "0, 1")
    assert page.locator(".sweep-count").inner_text() == "makes 6 runs"
    assert page.get_by_role("button", name="Submit sweep (6 runs)").is_visible()


@pytest.fixture(scope="module")
def token_stack(tmp_path_factory):
    """A second stack with BNLAB_API_TOKEN set (no worker: only writes are exercised)."""
    s = start_stack(tmp_path_factory.mktemp("dashboard-token"), token="t0ken-for-tests", workers=0)
    yield s
    s.stop()


def test_ask_token_once_for_writes(token_stack, page):
    """With a token required, the first write asks for it; it is kept and sent with later
    writes without asking again."""
    open_form(page, token_stack.url)
    fill_tiny(page, "needs token")
    # Reads are open here (no BNLAB_AUTH_READS): the form's live size preview (POST
    # /api/describe, which stores nothing) answers without a token and asks for none.
    page.wait_for_function(
        "document.querySelector('.model-size')?.textContent.includes('parameters')",
        timeout=30_000,
    )
    dialog = page.locator("#token-dialog")
    assert dialog.is_hidden()
    page.get_by_role("button", name="Submit run").click()
    dialog.wait_for(state="visible", timeout=30_000)
    dialog.locator("input").fill("t0ken-for-tests")
    dialog.get_by_role("button", name="Save").click()
    first = submitted_id(page)
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_function(
        f"() => [...document.querySelectorAll('.form-result a')]"
        f".some(a => a.textContent !== '#{first}')",
        timeout=30_000,
    )
    assert submitted_id(page) != first
    assert page.evaluate("localStorage.getItem('bnlab.token')") == "t0ken-for-tests"
    assert dialog.is_hidden()


def test_draw_shift_histogram_on_run_page(stack, page, two_runs):
    """The run page draws the per-channel shift histogram of the last probe, one histogram per
    BN layer of summary.shift_per_channel, next to every recorded curve."""
    run_id = two_runs[0]
    with stack.client() as c:
        per_channel = c.get(f"/api/runs/{run_id}").json()["summary"]["shift_per_channel"]
    page.goto(f"{stack.url}/runs/{run_id}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    hist = page.evaluate("""() => document.getElementById('chart-hist').data.map(t =>
        ({type: t.type, layer: t.meta.layer, n: t.x.length}))""")
    assert {h["layer"]: h["n"] for h in hist} == {k: len(v) for k, v in per_channel.items()}
    assert {h["type"] for h in hist} == {"histogram"}
    assert page.locator('[id^="chart-layer-"]').count() == len(per_channel)
    screenshot(page, "run-page")


@pytest.fixture(scope="module")
def synthetic_runs(stack):
    """20 finished synthetic runs (5 rates x 2 placements x 2 seeds), 2 BN layers, 1500 probe
    steps each, written straight into the stack's database."""
    return seed_runs(stack.database_url, n_runs=20, n_layers=2, n_steps=1500, name_prefix="grp ")


def test_group_seeds_into_mean_and_band(stack, page, synthetic_runs):
    """With group=1, runs that differ only in seed become one mean line plus a min/max band:
    10 groups of 2 runs, each drawn as an upper edge, a filled lower edge and the mean."""
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, synthetic_runs))}&group=1")
    page.wait_for_selector("body[data-ready=compare]", timeout=60_000)
    traces = page.evaluate("""() => document.getElementById('chart-layer-0').data.map(t =>
        ({runs: t.meta.runs, series: t.meta.series, band: Boolean(t.meta.band),
          fill: t.fill || ""}))""")
    train = [t for t in traces if t["series"] == "train_var"]
    groups = {tuple(t["runs"]) for t in train}
    assert len(groups) == 10 and all(len(g) == 2 for g in groups), groups
    for group in groups:
        kinds = sorted((t["band"], t["fill"]) for t in train if tuple(t["runs"]) == group)
        assert kinds == [(False, ""), (True, ""), (True, "tonexty")], kinds
    assert page.locator(".legend-item").count() == 10


def test_note_raw_points_when_downsampled(stack, page, synthetic_runs):
    """Series longer than the chart's max_points are drawn downsampled, and the chart says how
    many raw points each curve stands for."""
    ids = synthetic_runs[:2]
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, ids))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=60_000)
    drawn = page.evaluate(
        "() => Math.max(...document.getElementById('chart-layer-0').data.map(t => t.x.length))"
    )
    note = page.locator("#chart-layer-0 + .chart-note").inner_text()
    assert drawn < 1500
    assert note.startswith("1500 raw points per curve, drawn as ≤"), note


def test_seed_form_from_preset(stack, page):
    """Choosing a preset fills the form with its base config and its sweep grid, and the sweep
    builder counts the runs the preset makes (grid cells x seeds)."""
    with stack.client() as c:
        preset = next(p for p in c.get("/api/presets").json() if p["kind"] == "sweep")
    sweep = preset["sweep"]
    expected = len(sweep.get("seeds") or [None])
    for values in sweep["grid"].values():
        expected *= len(values)
    open_form(page, stack.url)
    page.select_option('select[name="preset"]', label=preset["title"])
    assert page.input_value('input[name="name"]') == sweep["base"]["name"]
    assert page.locator(".sweep-count").inner_text() == f"makes {expected} runs"
    assert page.locator(".sweep-row").count() == len(sweep["grid"])


def test_show_sweep_error_at_grid_row(stack, page):
    """A sweep value the server refuses is reported at the sweep row of that field."""
    open_form(page, stack.url)
    fill_tiny(page, "bad sweep")
    page.get_by_role("button", name="+ field").click()
    row = page.locator(".sweep-row").last
    row.locator(".sweep-path").fill("model.dropout.rate")
    row.locator(".sweep-values").fill("0.1, 1.5")
    page.get_by_role("button", name="Submit sweep (2 runs)").click()
    error = row.locator(".field-error")
    error.wait_for(timeout=30_000)
    assert error.inner_text().strip() != ""
    assert page.locator(".form-result a").count() == 0


def test_keep_view_options_in_url(stack, page, two_runs):
    """Log-y, smoothing and the layer choice change the charts and live in the URL, so a shared
    link opens the same view."""
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, two_runs))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    page.check('input[name="logy"]')
    page.select_option('select[name="layer"]', "1")
    page.wait_for_function(
        "document.getElementById('chart-layer-1')?.layout?.yaxis?.type === 'log'"
    )
    assert page.locator('[id^="chart-layer-"]').count() == 1
    url = page.url
    assert "logy=1" in url and "layer=1" in url
    page.goto(url)
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    assert page.evaluate("document.getElementById('chart-layer-1').layout.yaxis.type") == "log"
    assert page.is_checked('input[name="logy"]')


def test_download_run_series_as_csv(stack, page, two_runs):
    """The run page's CSV button downloads the run's full metric series."""
    run_id = two_runs[0]
    with stack.client() as c:
        steps = c.get(f"/api/runs/{run_id}/metrics").json()["step"]
    page.goto(f"{stack.url}/runs/{run_id}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    with page.expect_download() as info:
        page.get_by_role("button", name="Series CSV").click()
    text = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    assert info.value.suggested_filename == f"bnlab-run-{run_id}-metrics.csv"
    assert text[0].startswith("step,")
    assert [int(line.split(",")[0]) for line in text[1:]] == steps


def test_filter_runs_by_text(stack, page, two_runs):
    """The text filter narrows the table to matching names and is kept in the URL."""
    page.goto(stack.url + "/")
    page.wait_for_selector("table.runs tbody tr")
    page.fill('input[name="q"]', "head dropout")
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.runs tbody .run-name')]"
        ".every(a => a.textContent.includes('head dropout'))",
        timeout=30_000,
    )
    names = page.locator("table.runs tbody .run-name").all_inner_texts()
    assert names and all("head dropout" in n for n in names), names
    assert "q=head+dropout" in page.url or "q=head%20dropout" in page.url


@pytest.fixture
def long_run(stack):
    """A run long enough to watch while it trains; cancelled afterwards to free the CPU."""
    run_id = submit(
        stack, tiny_config("long live run", **{"dataset.limit": 1024, "train.epochs": 100})
    )
    yield run_id
    with stack.client() as c:
        c.post(f"/api/runs/{run_id}/cancel")
    wait_finished(stack, run_id, timeout_s=60)


def test_move_progress_bar_of_running_run(stack, page, long_run):
    """The runs table shows a progress bar for a running run and moves it without a reload."""
    page.goto(stack.url + "/")
    bar = f'tr[data-run-id="{long_run}"] .progress'
    page.wait_for_selector(bar, timeout=30_000)
    page.wait_for_function(
        f"Number(document.querySelector('{bar}')?.getAttribute('aria-valuenow')) > 0",
        timeout=60_000,
    )
    first = int(page.get_attribute(bar, "aria-valuenow"))
    page.wait_for_function(
        f"Number(document.querySelector('{bar}')?.getAttribute('aria-valuenow')) > {first}",
        timeout=60_000,
    )


def test_update_compare_view_while_run_trains(stack, page, two_runs, long_run):
    """In the compare view, a running run's curves grow in place as probes arrive."""
    with stack.client() as c:
        deadline = time.monotonic() + 60
        while (
            not c.get(f"/api/runs/{long_run}/layers").json()["layers"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
    page.goto(f"{stack.url}/compare?runs={two_runs[0]},{long_run}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    count = f"""() => Math.max(0, ...document.getElementById('chart-layer-0').data
        .filter(t => t.meta.runs[0] === {long_run} && t.meta.series === 'train_var')
        .map(t => t.x.length))"""
    before = page.evaluate(count)
    assert before > 0
    page.wait_for_function(f"({count})() > {before}", timeout=60_000)


def test_draw_dense_charts_with_webgl(stack, page, synthetic_runs):
    """Where WebGL is allowed (forced here: headless Chromium only has a software rasteriser,
    on which the dashboard picks SVG), figures with many points draw their lines as scattergl."""
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, synthetic_runs[:6]))}&gl=1")
    page.wait_for_selector("body[data-ready=compare]", timeout=120_000)
    types = page.evaluate("() => document.getElementById('chart-layer-0').data.map(t => t.type)")
    assert set(types) == {"scattergl"}, set(types)
    assert not page.errors, page.errors


def test_export_chart_as_png(stack, page, two_runs):
    """Every compare chart offers the PNG download button, and Plotly renders the figure to PNG."""
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, two_runs))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    charts = page.locator(".js-plotly-plot").count()
    assert page.locator('.js-plotly-plot .modebar-btn[data-title*="png" i]').count() == charts
    png = page.evaluate("Plotly.toImage(document.getElementById('chart-layer-0'), {format: 'png'})")
    assert png.startswith("data:image/png;base64,") and len(png) > 10_000


# ---- gradient noise, networks without BN, log-y on the run page, long sweep names ------------


@pytest.fixture(scope="module")
def no_bn_run(stack):
    """A finished run of a 3-block sigmoid MLP without BN (layers named by their linear, only
    grad_norm recorded) with probe.grad_noise on, so it records grad_cos."""
    run_id = submit(
        stack,
        tiny_config(
            "sigmoid without BN",
            **{
                "model.widths": [32, 32, 32],
                "model.block": ["linear", "activation"],
                "model.activation": "sigmoid",
                "probe.grad_noise": True,
            },
        ),
    )
    assert wait_finished(stack, run_id)["status"] == "succeeded", stack.log_tail()
    return run_id


def finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float))]


def test_send_grad_noise_from_form(stack, page):
    """The form's gradient-noise checkbox sets probe.grad_noise in the submitted config."""
    open_form(page, stack.url)
    fill_tiny(page, "form grad noise")
    page.check('input[name="probe.grad_noise"]')
    page.get_by_role("button", name="Submit run").click()
    run_id = submitted_id(page)
    with stack.client() as c:
        assert c.get(f"/api/runs/{run_id}").json()["config"]["probe"]["grad_noise"] is True
        c.post(f"/api/runs/{run_id}/cancel")  # its curves are not needed: free the CPU


def test_draw_grad_cos_chart_on_run_page(stack, page, no_bn_run):
    """A run with grad_noise on gets a gradient-noise chart of every grad_cos value it recorded."""
    with stack.client() as c:
        expected = finite(c.get(f"/api/runs/{no_bn_run}/metrics").json()["grad_cos"])
    assert expected
    page.goto(f"{stack.url}/runs/{no_bn_run}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    traces = page.evaluate(
        "() => document.getElementById('chart-gradcos').data.map(t => "
        "({series: t.meta.series, y: t.y}))"
    )
    assert [t["series"] for t in traces] == ["grad_cos"]
    assert finite(traces[0]["y"]) == pytest.approx(expected)
    title = page.evaluate("document.getElementById('chart-gradcos').layout.title.text")
    assert "cosine" in title and "higher = less noise" in title, (
        title
    )  # a cosine, not a noise level
    assert not page.errors, page.errors


def test_hide_grad_cos_chart_without_grad_noise(stack, page, two_runs):
    """Runs without grad_noise show no gradient-noise chart, neither on the run page nor in
    the compare view."""
    page.goto(f"{stack.url}/runs/{two_runs[0]}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    assert page.locator("#chart-gradcos").count() == 0
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, two_runs))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    assert page.locator("#chart-gradcos").count() == 0


def test_draw_grad_cos_chart_in_compare_view(stack, page, two_runs, no_bn_run):
    """The compare view draws the gradient-noise chart when one selected run has grad_cos,
    with a curve for that run only."""
    page.goto(f"{stack.url}/compare?runs={two_runs[0]},{no_bn_run}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    traces = page.evaluate(
        "() => document.getElementById('chart-gradcos').data.map(t => "
        "({runs: t.meta.runs, series: t.meta.series, n: t.y.length}))"
    )
    assert [(t["runs"], t["series"]) for t in traces] == [([no_bn_run], "grad_cos")]
    assert traces[0]["n"] > 0
    assert not page.errors, page.errors


def test_show_only_charts_with_data_for_run_without_bn(stack, page, no_bn_run):
    """A run without BN shows no BN-layer, mean or shift chart; it shows grad_norm over steps
    and by depth, one point per layer; every chart drawn has a finite value."""
    with stack.client() as c:
        layers = c.get(f"/api/runs/{no_bn_run}/layers").json()["layers"]
    assert [layer["name"] for layer in layers] == [f"blocks.{i}.linear" for i in range(3)]
    page.goto(f"{stack.url}/runs/{no_bn_run}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    assert page.locator('[id^="chart-layer-"], #chart-means, #chart-shift').count() == 0
    over_steps = page.evaluate(
        "() => document.getElementById('chart-grad').data.map(t => t.meta.layer)"
    )
    assert sorted(over_steps) == [layer["index"] for layer in layers]
    depth = page.evaluate("() => document.getElementById('chart-grad-depth').data[0].y")
    assert depth == pytest.approx([finite(layer["grad_norm"])[-1] for layer in layers])
    empty = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].filter(div =>
        !div.data.some(t => (t.y || t.x || []).some(Number.isFinite))).map(div => div.id)""")
    assert empty == []
    screenshot(page, "run-page-no-bn")


def test_keep_run_page_log_y_in_url(stack, page, no_bn_run):
    """The run page's log-y toggle puts the gradient-norm charts on a log axis and lives in
    the URL, so a shared link opens log-scaled."""
    page.goto(f"{stack.url}/runs/{no_bn_run}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    assert page.evaluate("document.getElementById('chart-grad').layout.yaxis.type") == "linear"
    page.check('input[name="logy"]')
    page.wait_for_function("document.getElementById('chart-grad').layout.yaxis.type === 'log'")
    assert "logy=1" in page.url
    page.goto(page.url)
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    for chart in ("chart-grad", "chart-grad-depth"):
        assert page.evaluate(f"document.getElementById('{chart}').layout.yaxis.type") == "log", (
            chart
        )
    assert page.is_checked('input[name="logy"]')


LONG_PREFIX = "saturating_sigmoid_depth_sweep_without_batchnorm_widths=256x256x256x256x256x256 · "


def test_fit_summary_table_with_long_run_names(stack, page):
    """With long sweep names, every column of the compare view's test-accuracy table stays
    inside its panel (names wrap; nothing is cut off or hidden behind a scrollbar)."""
    ids = seed_runs(stack.database_url, n_runs=6, n_layers=2, n_steps=50, name_prefix=LONG_PREFIX)
    page.goto(f"{stack.url}/compare?runs={','.join(map(str, ids))}")
    page.wait_for_selector("body[data-ready=compare]", timeout=60_000)
    outside = page.evaluate("""() => {
        const panel = document.querySelector('table.summary').closest('.panel')
            .getBoundingClientRect();
        return [...document.querySelectorAll('table.summary th, table.summary td')]
            .map(cell => ({text: cell.textContent, r: cell.getBoundingClientRect()}))
            .filter(c => c.r.left < panel.left - 0.5 || c.r.right > panel.right + 0.5)
            .map(c => c.text);
    }""")
    headers = page.locator("table.summary th").all_inner_texts()
    # run, status, test eval, 3 train-mode, recalibrated, max shift
    assert len(headers) == 8, headers
    assert outside == [], outside
    screenshot(page, "compare-long-names")


def test_skip_empty_layer_charts_in_compare_view(stack, page, two_runs, no_bn_run):
    """Comparing a BN network with a deeper network without BN draws variance charts only for
    the layers that have BN variances, and offers only those in the layer selector."""
    with stack.client() as c:
        bn_layers = len(c.get(f"/api/runs/{two_runs[0]}/layers").json()["layers"])
    page.goto(f"{stack.url}/compare?runs={two_runs[0]},{no_bn_run}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    charts = page.evaluate("""() => [...document.querySelectorAll('[id^="chart-layer-"]')]
        .map(div => ({id: div.id, finite: div.data.some(t => t.y.some(Number.isFinite))}))""")
    assert charts == [{"id": f"chart-layer-{i}", "finite": True} for i in range(bn_layers)]
    options = page.locator('select[name="layer"] option').all_inner_texts()
    assert len(options) == 1 + bn_layers, options
    assert not page.errors, page.errors


def test_show_script_run_progress_only_when_planned(stack, page):
    """A script run (the SDK) that said its length gets a progress bar at step / total_steps;
    one that did not shows its step and no bar (no made-up fraction), in the table and on its
    page."""
    ids = {}
    with stack.client() as c:
        for name, total in (("planned loop", 200), ("open-ended loop", None)):
            key = (name.replace(" ", "-") + "-" * 32)[:40]
            body = {"key": key, "name": name, "total_steps": total}
            res = c.post("/api/script-runs", json=body)
            assert res.status_code in (200, 201), res.text
            ids[name] = res.json()["id"]
            hb = c.post(
                f"/api/runs/{ids[name]}/heartbeat",
                json={"step": 50},
                headers={"X-Bnlab-Run-Key": key},
            )
            assert hb.status_code == 200, hb.text
    page.goto(stack.url + "/")
    planned = f'tr[data-run-id="{ids["planned loop"]}"]'
    page.wait_for_selector(f"{planned} .progress", timeout=30_000)
    assert page.get_attribute(f"{planned} .progress", "aria-valuenow") == "25"
    open_ended = f'tr[data-run-id="{ids["open-ended loop"]}"]'
    page.wait_for_selector(f"{open_ended} .step", timeout=30_000)
    assert page.locator(f"{open_ended} .progress").count() == 0
    page.goto(f"{stack.url}/runs/{ids['open-ended loop']}")
    page.wait_for_function("document.body.innerText.includes('length not given')")
    assert page.locator(".progress").count() == 0
    page.goto(f"{stack.url}/runs/{ids['planned loop']}")
    page.wait_for_function("document.body.innerText.includes('25.0%')")
