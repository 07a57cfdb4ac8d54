"""Webhook alerts (issue 23 item 4): a JSON POST, Slack-compatible (`text`, plus the same as
fields under `bnlab`), when a run crashes or diverges, or when a BN layer's shift or the
eval-vs-recalibrated gap crosses the user's threshold; each once; received by a real HTTP
server on loopback. A webhook that is down never stops the training."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.sdk.alerts import Alerts
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.utils.net import free_port

torch.set_num_threads(1)


@pytest.fixture
def hook():
    """A loopback webhook: the JSON bodies it received, in order."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/json"
            got.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")  # what Slack answers

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000", got
    finally:
        server.shutdown()
        server.server_close()


def train(run, steps=12, nan_at=None):
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run.watch(model, held_out=cifar_like(32, seed=5), every=4)
    x, y = cifar_like(8 * steps)
    for k in range(steps):
        loss = F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=torch.tensor(float("nan")) if k == nan_at else loss.detach())
    return model


def test_a_crash_is_posted(hook, tmp_path):
    url, got = hook
    with pytest.raises(RuntimeError, match="out of memory"):
        with bnlab.init(name="crashy", mode="offline", dir=tmp_path, alerts=url) as run:
            train(run, steps=5)
            raise RuntimeError("CUDA out of memory")
    assert len(got) == 1
    (body,) = got
    assert body["text"].startswith("bnlab: run 'crashy' crashed: RuntimeError: CUDA out of")
    assert body["bnlab"]["event"] == "failed" and body["bnlab"]["step"] == 5
    assert body["bnlab"]["error"] == "RuntimeError: CUDA out of memory"


def test_divergence_is_posted_once_when_seen(hook, tmp_path):
    url, got = hook
    run = bnlab.init(name="nan", mode="offline", dir=tmp_path, alerts=url)
    train(run, steps=12, nan_at=5)
    run.alerter.wait(10)
    assert [b["bnlab"]["event"] for b in got] == ["diverged"]  # at the probe (step 8)
    assert got[0]["bnlab"]["step"] == 8 and "not finite by step 8" in got[0]["text"]
    run.finish()  # ends `diverged`: no second alert
    assert [b["bnlab"]["event"] for b in got] == ["diverged"]


def test_thresholds_on_shift_and_gap(hook, tmp_path):
    url, got = hook
    alerts = Alerts(url, on=(), shift_above=0.0, gap_above=-1.0)  # every layer, any gap
    run = bnlab.init(name="limits", mode="offline", dir=tmp_path, alerts=alerts)
    model = train(run, steps=12)  # 3 probes
    run.evaluate(model, cifar_like(64, seed=7), train_data=cifar_like(64, seed=8))
    run.finish()
    shifts = [b for b in got if b["bnlab"]["event"] == "shift"]
    names = run_layers(run)
    assert sorted(b["bnlab"]["layer"] for b in shifts) == sorted(names)  # once per layer
    assert all(b["bnlab"]["value"] > 0 and b["bnlab"]["threshold"] == 0 for b in shifts)
    (gap,) = [b for b in got if b["bnlab"]["event"] == "gap"]
    summary = json.loads(run.spool_path.read_text().splitlines()[-1])["summary"]
    want = summary["test_acc_recalibrated"] - summary["test_acc_eval"]
    assert gap["bnlab"]["value"] == pytest.approx(want)
    assert "recalibrating BN gains" in gap["text"]


def run_layers(run) -> list[str]:
    lines = [json.loads(s) for s in run.spool_path.read_text().splitlines()]
    return next(r["layer_names"] for r in lines if r.get("type") == "watch")


def test_a_webhook_that_is_down_never_stops_training(tmp_path, caplog):
    url = f"http://127.0.0.1:{free_port()}/nobody"
    run = bnlab.init(name="down", mode="offline", dir=tmp_path, alerts=Alerts(url, timeout_s=2))
    train(run, steps=8, nan_at=2)
    run.finish()
    assert json.loads(run.spool_path.read_text().splitlines()[-1])["status"] == "diverged"
    assert "alert webhook" in caplog.text and "failed" in caplog.text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"url": "hooks.slack.com/x"}, "http"),
        ({"url": "http://x", "on": ("crashed",)}, "on= takes"),
        ({"url": "http://x", "shift_above": float("nan")}, "shift_above"),
    ],
)
def test_bad_alert_settings_are_refused_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Alerts(**kwargs)
