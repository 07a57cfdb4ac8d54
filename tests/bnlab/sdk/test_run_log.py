"""Logging shaped like what users know (issue 23 item 2): run.log({...}, step=None) with nested
names and any step, per-epoch values that do not advance the training step, next to
run.step(); project / group that the runs table filters and groups by; one run per job under
torchrun (rank 0 writes, the others get a RankRun).

Against a real `bnlab serve` (SQLite): values logged at a probe's step keep the probe's own
train_loss / val_acc (the server writes a step's metrics row only for a record with a fixed
column: before, a log of the script's own names blanked them), and no row of nulls appears
between probes.
"""

from __future__ import annotations

import json

import httpx
import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.sdk.run import RankRun
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.bnlab.sdk.servers import make_server

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = make_server(tmp_path_factory.mktemp("log-server")).start()
    try:
        yield s
    finally:
        s.stop()


def spool_lines(run) -> list[dict]:
    return [json.loads(s) for s in run.spool_path.read_text().splitlines()]


def test_log_nested_names_any_step_without_advancing(tmp_path):
    run = bnlab.init(name="log", mode="offline", dir=tmp_path, progress=False)
    for _ in range(3):
        run.step(loss=1.0)
    run.log({"val": {"acc": torch.tensor(0.75), "loss": 0.5}, "epoch_time": 12})
    run.log({"test/acc": 0.7}, step=1)  # any step, earlier too
    assert run.step_count == 3  # log never advances the training step
    run.log({"lr": 0.1, "loss": 3.0})  # probe columns at the current step: the window
    run.finish()
    records = [r for r in spool_lines(run) if "step" in r]
    assert {"step": 3, "metrics": {"val/acc": 0.75, "val/loss": 0.5, "epoch_time": 12.0}} in (
        records
    )
    assert {"step": 1, "metrics": {"test/acc": 0.7}} in records
    probe = [r for r in records if "train_loss" in r["metrics"]]
    assert probe == [{"step": 3, "metrics": {"train_loss": 1.5, "lr": 0.1}}]  # (1+1+1+3)/4


@pytest.mark.parametrize(
    "values, step, error, match",
    [
        ({"val acc": 1.0}, None, ValueError, "'val acc'"),
        ({"x" * 65: 1.0}, None, ValueError, "at most 64"),
        ({"val_acc": 0.9}, 7, ValueError, "'val_acc' is a bnlab probe column"),
        ({"a": "high"}, None, TypeError, "'a' must be a number"),
        ({"a": torch.ones(3)}, None, ValueError, "'a' must be a scalar"),
        ({"a": 1.0}, -1, ValueError, "step must be in"),
        ({"a": 1.0}, 1.5, TypeError, "step must be an int"),
        ([1.0], None, TypeError, "dict"),
    ],
)
def test_log_refuses_what_the_server_would_naming_it(tmp_path, values, step, error, match):
    run = bnlab.init(name="bad", mode="offline", dir=tmp_path, progress=False)
    with pytest.raises(error, match=match):
        run.log(values, step=step)
    run.finish()
    assert not [r for r in spool_lines(run) if "step" in r]  # nothing half-written


def test_many_names_are_split_over_records(tmp_path):
    run = bnlab.init(name="wide", mode="offline", dir=tmp_path, progress=False)
    run.log({f"m{i}": float(i) for i in range(150)})
    run.finish()
    records = [r for r in spool_lines(run) if "step" in r]
    assert [len(r["metrics"]) for r in records] == [64, 64, 22]
    merged = {k: v for r in records for k, v in r["metrics"].items()}
    assert merged == {f"m{i}": float(i) for i in range(150)}


def test_project_and_group_are_tags_and_a_config_path(tmp_path):
    run = bnlab.init(
        name="placed",
        mode="offline",
        dir=tmp_path,
        config={"lr": 0.1},
        tags=["mine"],
        project="cifar",
        group="sweep-1",
        progress=False,
    )
    run.finish()
    head = spool_lines(run)[0]
    assert head["tags"] == ["mine", "project:cifar", "group:sweep-1"]
    assert head["config"] == {"lr": 0.1, "bnlab": {"project": "cifar", "group": "sweep-1"}}
    for bad in ("", "x" * 57, 3):
        with pytest.raises(ValueError, match="project"):
            bnlab.init(name="x", mode="offline", dir=tmp_path / "bad", project=bad)


def test_other_ranks_make_no_run(tmp_path, monkeypatch):
    """torchrun sets RANK: only rank 0 makes the run; the others' calls all do nothing."""
    monkeypatch.setenv("RANK", "1")
    run = bnlab.init(name="ddp", url="http://127.0.0.1:9", dir=tmp_path, progress=False)
    assert isinstance(run, RankRun) and run.rank == 1
    with run:
        run.watch(TinyResNet(), cifar_like(8)[0])
        for _ in range(5):
            run.step(loss=1.0)
        run.log({"val/acc": 1.0})
        assert run.evaluate(None, None) == {} and run.should_stop is False
    assert run.step_count == 5 and run.id is None
    assert not list(tmp_path.iterdir())  # no spool, no request
    own = bnlab.init(name="ddp", mode="offline", dir=tmp_path, all_ranks=True, progress=False)
    own.finish()
    head = spool_lines(own)[0]
    assert head["name"] == "ddp [rank 1]" and head["tags"] == ["rank:1"]


def test_log_at_a_probe_step_keeps_the_probe_values(server, tmp_path):
    model = TinyResNet()
    x, y = cifar_like(8 * 20)
    run = bnlab.init(
        name="epochs", url=server.url, dir=tmp_path, project="p", group="g", progress=False
    )
    run.watch(model, held_out=cifar_like(32, seed=5), every=5)
    for k in range(20):
        run.step(loss=F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8]))
        if run.step_count % 10 == 0:  # "end of an epoch": a probe step
            run.log({"val": {"acc": 0.5 + run.step_count / 100}})
        if run.step_count == 12:  # between probes
            run.log({"val": {"acc": 0.61}})
    run.finish()
    api = httpx.Client(base_url=server.url, timeout=30)
    metrics = api.get(f"/api/runs/{run.id}/metrics").json()
    assert metrics["step"] == [5, 10, 15, 20]  # no row of nulls at step 12
    assert all(v is not None for v in metrics["train_loss"])
    assert all(v is not None for v in metrics["val_acc"])  # the probe's, not blanked
    extra = api.get(f"/api/runs/{run.id}/extra-metrics").json()["metrics"]
    assert extra["val/acc"] == {"step": [10, 12, 20], "value": [0.6, 0.61, 0.7]}
    assert api.get(f"/api/runs/{run.id}").json()["step"] == 20
    tagged = api.get("/api/runs", params={"tag": "group:g"}).json()["data"]
    assert [r["id"] for r in tagged] == [run.id]
    groups = api.get("/api/runs/groups", params={"group_by": "config.bnlab.group"}).json()
    assert {"value": "g", "ids": [run.id]}.items() <= {
        k: v for g in groups["groups"] if g["value"] == "g" for k, v in g.items()
    }.items()
    api.close()
