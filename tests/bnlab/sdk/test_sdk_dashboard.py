"""Script runs on the PostgreSQL + Redis stack, first-class in the dashboard: two runs of a user's
own ResNet streamed by the SDK to `bnlab serve`, read back through GET /api/compare, and drawn
by the compare view in Chromium (Playwright) with the values the client measured."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F

import bnlab
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.bnlab.sdk.servers import postgres_server

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.browser]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory):
    name = f"bnlab_sdk_stack_{os.getpid()}"
    with postgres_server(tmp_path_factory.mktemp("pg-stack"), name, redis_db=9) as server:
        yield server


def stream(url: str, p: float, spool_dir: Path) -> bnlab.Run:
    torch.manual_seed(0)
    model = TinyResNet(p=p)
    x, y = cifar_like(16 * 12, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with bnlab.init(
        name=f"own resnet p={p}", config={"dropout": p}, tags=["browser"], url=url, dir=spool_dir
    ) as run:
        run.watch(model, held_out=cifar_like(64, seed=7), every=4)
        for k in range(12):
            loss = F.cross_entropy(model(x[16 * k : 16 * k + 16]), y[16 * k : 16 * k + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss.detach())
    return run


def test_compare_script_runs_in_the_dashboard(pg_stack, tmp_path, browser):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    runs = [stream(pg_stack.url, p, tmp_path) for p in (0.0, 0.3)]
    ids = [r.id for r in runs]
    with httpx.Client(base_url=pg_stack.url, timeout=30) as c:
        listed = c.get("/api/runs", params={"tag": "browser"}).json()["data"]
        assert {r["id"]: (r["kind"], r["status"]) for r in listed} == {
            i: ("script", "succeeded") for i in ids
        }
        both = c.get("/api/compare", params={"runs": ",".join(map(str, ids))})
        assert both.status_code == 200, both.text
        stored = {i: c.get(f"/api/runs/{i}/layers").json()["layers"] for i in ids}
    body = json.dumps(both.json())
    for i in ids:
        assert len(stored[i]) == 8 and stored[i][0]["step"] == [4, 8, 12]
    assert '"stage1.0.bn2"' in body  # the compare answer names the user's layers
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{pg_stack.url}/compare?runs={','.join(map(str, ids))}")
        page.wait_for_selector("body[data-ready=compare]", timeout=60_000)
        charts = page.evaluate("""() => [...document.querySelectorAll('[id^="chart-layer-"]')]
            .map(div => ({id: div.id, traces: div.data.map(t => ({runs: t.meta.runs,
                series: t.meta.series, x: [...t.x], y: [...t.y]}))}))""")
        page.goto(f"{pg_stack.url}/runs/{ids[1]}")
        page.wait_for_selector("text=script (bnlab SDK", timeout=30_000)
    finally:
        context.close()
    assert charts, "no BN layer chart was drawn"
    for chart in charts:
        index = int(chart["id"].rsplit("-", 1)[1])
        for i in ids:
            mine = [t for t in chart["traces"] if t["runs"] == [i] and t["series"] == "train_var"]
            assert mine, (chart["id"], i)
            want = stored[i][index]["train_var"]
            assert any(t["x"] == [4, 8, 12] and t["y"] == pytest.approx(want) for t in mine)
    assert not errors, errors
