"""The story panels (frontend/js/views/story.js) in Chromium against the real stack: runs made
from the variance_shift preset (shrunk to seconds, its tags kept) show the preset's question,
measured and predicted shift per layer, and the accuracy gaps, each equal to what the API's
summaries say; the run page shows the same for one run."""

from __future__ import annotations

import copy
import math

import pytest
from dashboard_stack import screenshot, wait_finished

from bnlab.core.schema.experiment import set_dotted

PRESET = "variance_shift"
SMALL = {  # seconds on one CPU thread; two hidden blocks, so "per layer" has two layers
    "dataset": {"name": "digits", "limit": 512},
    "model.widths": [32, 32],
    "train.epochs": 2,
    "train.batch_size": 32,
    "probe.every_steps": 4,
    "probe.eval_batches": 1,
    "probe.train_mode_test_batch_sizes": [1, 8],
    "probe.recalibrate_samples": 128,
}


@pytest.fixture(scope="module")
def preset_runs(stack):
    """The variance_shift preset's sweep, as the dashboard submits it, at a tiny size: dropout
    before BN and head dropout only (bernoulli), two hidden blocks. Returns (preset, runs)."""
    with stack.client() as c:
        preset = c.get(f"/api/presets/{PRESET}").json()
        sweep = copy.deepcopy(preset["sweep"])
        base = sweep["base"]
        for path, value in SMALL.items():
            base = set_dotted(base, path, value)
        sweep["base"] = base
        sweep["grid"] = {"model.block": preset["sweep"]["grid"]["model.block"]}
        created = c.post("/api/sweeps", json=sweep)
        assert created.status_code == 201, created.text
        ids = [r["id"] for r in created.json()["runs"]]
    runs = [wait_finished(stack, i) for i in ids]
    assert all(r["status"] == "succeeded" for r in runs), stack.log_tail()
    return preset, runs


def fmt3(v: float) -> str:
    return f"{v:.3f}"


def points(v: float) -> str:
    return f"{'+' if v >= 0 else ''}{100 * v:.1f} pt"


def cell(page, entry: int, col: str, layer: str | None = None) -> str:
    where = f'[data-entry="{entry}"]' + (f'[data-layer="{layer}"]' if layer else "")
    return page.locator(f'tr{where} td[data-col="{col}"]').inner_text()


def test_show_preset_question_shift_and_gaps_on_compare_view(stack, page, preset_runs):
    """Above the charts: the preset's question, look-at and expected texts; per run and BN layer
    the measured and the predicted shift; eval, train-mode and recalibrated accuracy with the
    gaps recalibrated − eval and eval − train mode — every figure the one in the run's summary."""
    preset, runs = preset_runs
    asked = []
    page.on("request", lambda req: asked.append(req.url) if "/api/compare?" in req.url else None)
    page.goto(f"{stack.url}/compare?runs={','.join(str(r['id']) for r in runs)}")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    assert len(asked) == 1, asked  # the story rides on the view's one request
    panel = page.locator(f'.story-preset[data-preset="{PRESET}"]')
    assert preset["question"] in panel.locator(".story-question").inner_text()
    # plain words first; the formulas and field names behind a fold
    expected, _, formulas = preset["expected"].partition("\n\nIn formulas: ")
    assert expected in panel.locator(".story-expected").inner_text()
    assert formulas and formulas not in panel.locator(".story-expected").inner_text()
    panel.locator(".preset-formulas > summary").click()
    assert formulas in panel.locator(".preset-formulas").inner_text()
    assert preset["look_at"] in panel.locator(".story-look").inner_text()
    # the story sits above the raw curves
    assert page.evaluate("""() => {
        const story = document.querySelector('.story-preset');
        const chart = document.querySelector('[id^="chart-layer-"]');
        return Boolean(story.compareDocumentPosition(chart) & Node.DOCUMENT_POSITION_FOLLOWING);
    }""")

    predicted_seen = 0
    for run in runs:
        s = run["summary"]
        for name, measured in s["shift_by_layer"].items():
            assert cell(page, run["id"], "measured", name) == fmt3(measured)
            assert cell(page, run["id"], "measured-li", name) == fmt3(s["shift_li_by_layer"][name])
            assert cell(page, run["id"], "floor", name) == fmt3(s["shift_floor_by_layer"][name])
            want = s.get("shift_predicted_by_layer", {}).get(name)
            if want is not None:
                predicted_seen += 1
                assert cell(page, run["id"], "predicted", name) == fmt3(want)
                assert cell(page, run["id"], "ratio", name) == fmt3(measured / want)
        bs = max(s["test_acc_train_mode"], key=int)
        acc_eval, recal, train = (
            s["test_acc_eval"],
            s["test_acc_recalibrated"],
            s["test_acc_train_mode"][bs],
        )
        assert cell(page, run["id"], "eval") == f"{100 * acc_eval:.1f}%"
        assert cell(page, run["id"], "gap-recal-eval") == points(recal - acc_eval)
        assert cell(page, run["id"], "gap-eval-train") == points(acc_eval - train)
    assert predicted_seen >= 2, "the dropout-before-BN run has a prediction per BN layer"

    # the chart draws measured and predicted per layer for the run with dropout before BN
    before = next(r for r in runs if "dropout" in r["config"]["model"]["block"])
    series = page.evaluate(
        """(id) => document.getElementById('story-shift-layers').data
        .filter(t => (t.meta.runs || []).includes(id)).map(t => [t.meta.series, t.y])""",
        before["id"],
    )
    drawn = dict(series)
    assert set(drawn) >= {"shift", "predicted"}, series
    want = before["summary"]["shift_predicted_by_layer"]
    assert all(
        math.isclose(a, b, rel_tol=1e-9)
        for a, b in zip(drawn["predicted"], want.values(), strict=True)
    )
    # per-channel log-ratio quartiles over training, one median line per run: asked for when
    # the panel is opened
    page.locator(".story-dist summary").click()
    page.wait_for_function(
        """document.getElementById('story-distribution')?.data
            ?.some(t => t.meta.series === 'logratio_median')""",
        timeout=30_000,
    )
    assert len(asked) == 2 and "shift_log_median" in asked[1], asked
    medians = page.evaluate("""() => document.getElementById('story-distribution').data
        .filter(t => t.meta.series === 'logratio_median').map(t => t.meta.runs[0])""")
    assert sorted(medians) == sorted(r["id"] for r in runs)
    assert not page.errors, page.errors
    screenshot(page, "compare-story")


def test_group_seeds_into_mean_spread_and_n(stack, page, preset_runs):
    """Two seeds of one config grouped: the accuracy table shows mean ± sd and n = 2."""
    _, runs = preset_runs
    run = runs[0]
    cfg = set_dotted(run["config"], "train.seed", 1)
    with stack.client() as c:
        other = c.post("/api/runs", json=cfg).json()["id"]
    second = wait_finished(stack, other)
    page.goto(f"{stack.url}/compare?runs={run['id']},{other}&group=1")
    page.wait_for_selector("body[data-ready=compare]", timeout=30_000)
    key = f"{run['id']}+{other}"
    assert cell(page, key, "n") == "2"
    values = [run["summary"]["test_acc_eval"], second["summary"]["test_acc_eval"]]
    mean = sum(values) / 2
    sd = abs(values[0] - values[1]) / math.sqrt(2)
    assert cell(page, key, "eval") == f"{100 * mean:.1f}% ± {100 * sd:.1f} pt"
    assert not page.errors, page.errors


def test_show_story_on_run_page(stack, page, preset_runs):
    """The run page shows the same story for one run: preset question, shift table, gaps."""
    preset, runs = preset_runs
    run = runs[0]
    page.goto(f"{stack.url}/runs/{run['id']}")
    page.wait_for_selector("body[data-ready=run]", timeout=30_000)
    assert preset["question"] in page.locator(".story-question").inner_text()
    s = run["summary"]
    name, measured = next(iter(s["shift_by_layer"].items()))
    assert cell(page, run["id"], "measured", name) == fmt3(measured)
    assert cell(page, run["id"], "gap-recal-eval") == points(
        s["test_acc_recalibrated"] - s["test_acc_eval"]
    )
    assert page.locator("#story-loss .main-svg").count() > 0
    assert not page.errors, page.errors
    screenshot(page, "run-story")


def test_compute_story_figures_like_independent_code(stack, page):
    """storydata.js's figures against independent Python: mean and sample sd (statistics),
    Pearson r (numpy), the noise floor's fold E[max(R, 1/R)] (its closed form with math.erf, and
    a Monte Carlo of log R ~ N(0, s²)) and its inverse."""
    import statistics

    import numpy as np

    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=20).tolist(), rng.normal(size=20).tolist()
    page.goto(stack.url + "/")
    got = page.evaluate(
        """async ([xs, ys]) => {
            const m = await import('/js/data/story.js');
            const s = m.stats([...xs, null, NaN]);
            const spreads = [0.05, 0.2, 0.7];
            const back = spreads.map((v) => m.unfold(m.foldMean(v)));
            return {mean: s.mean, sd: s.sd, n: s.n, r: m.pearson(xs, ys).r,
                    fold: spreads.map(m.foldMean), back};
        }""",
        [xs, ys],
    )
    assert got["n"] == 20
    assert math.isclose(got["mean"], statistics.fmean(xs), rel_tol=1e-12)
    assert math.isclose(got["sd"], statistics.stdev(xs), rel_tol=1e-12)
    assert math.isclose(got["r"], float(np.corrcoef(xs, ys)[0, 1]), rel_tol=1e-9)
    for s, fold, back in zip((0.05, 0.2, 0.7), got["fold"], got["back"], strict=True):
        closed = 2 * math.exp(s * s / 2) * 0.5 * (1 + math.erf(s / math.sqrt(2)))  # 2·e^(s²/2)·Φ(s)
        assert math.isclose(fold, closed, rel_tol=1e-6), (s, fold, closed)
        mc = float(np.mean(np.exp(np.abs(rng.normal(0, s, 400_000)))))  # max(R, 1/R) = e^|log R|
        assert math.isclose(fold, mc, rel_tol=3e-3), (s, fold, mc)
        assert math.isclose(back, s, rel_tol=1e-6), (s, back)
