"""val_acc_train_mode is measured at one probe in probe.train_mode_every (null at the others):
the run page and the compare view draw its curve through the measured probes only."""

from __future__ import annotations

from dashboard_stack import submit, tiny_config, wait_finished


def test_draw_train_mode_curve_through_measured_probes(stack, page):
    cfg = tiny_config(
        "train mode every 3 probes", **{"probe.every_steps": 2, "probe.train_mode_every": 3}
    )
    run_id = submit(stack, cfg)
    assert wait_finished(stack, run_id)["status"] == "succeeded", stack.log_tail()
    with stack.client() as c:
        m = c.get(f"/api/runs/{run_id}/metrics").json()
    pairs = [
        (s, v) for s, v in zip(m["step"], m["val_acc_train_mode"], strict=True) if v is not None
    ]
    assert len(pairs) >= 2 and len(pairs) < len(m["step"])  # some probes have no value
    want = {"x": [s for s, _ in pairs], "y": [v for _, v in pairs]}

    for path, ready, chart in (
        (f"/runs/{run_id}", "run", "chart-acc"),
        (f"/compare?runs={run_id}", "compare", "chart-accuracy"),
    ):
        page.goto(stack.url + path)
        page.wait_for_selector(f"body[data-ready={ready}]", timeout=30_000)
        got = page.evaluate(
            f"() => document.getElementById('{chart}').data"
            ".filter(t => t.meta.series === 'val_acc_train_mode').map(t => ({x: t.x, y: t.y}))"
        )
        assert got == [want], path
    assert not page.errors, page.errors
