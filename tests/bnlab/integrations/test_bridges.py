"""bnlab's diagnostics in the tracker a team keeps, with one argument (issue 23 item 3):
`bnlab.init(mirror=...)` with a real TensorBoard SummaryWriter, a real MLflow run on a file
store and a real offline W&B run; each read back with that tracker's own reader and compared
with what bnlab recorded (the spool's probe rows and evaluate()'s accuracies)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import mlflow
import pytest
import torch
import torch.nn.functional as F
import wandb
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing import event_accumulator as ea
from torch.utils.tensorboard import SummaryWriter
from wandb.proto import wandb_internal_pb2

import bnlab
from bnlab.core.registry import LAYER_KEYS
from tests.bnlab.sdk.models import TinyResNet, cifar_like

torch.set_num_threads(1)
SHIFT, SHIFT_LI = LAYER_KEYS.index("shift"), LAYER_KEYS.index("shift_li")


def train(run, steps: int = 12) -> None:
    torch.manual_seed(0)
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run.watch(model, held_out=cifar_like(32, seed=5), every=4, train_mode_every=1)
    x, y = cifar_like(8 * steps)
    for k in range(steps):
        loss = F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss.detach())
    model.eval()
    run.evaluate(model, cifar_like(64, seed=7), train_data=cifar_like(64, seed=8))
    run.finish()


def recorded(run) -> tuple[list[str], dict[str, dict[int, float]], dict]:
    """(layer names, expected scalars by name and step, the finish summary) from the spool."""
    lines = [json.loads(s) for s in run.spool_path.read_text().splitlines()]
    names = next(r["layer_names"] for r in lines if r.get("type") == "watch")
    want: dict[str, dict[int, float]] = {}
    for r in lines:
        if "layers" not in r:
            continue
        for name, row in zip(names, r["layers"], strict=True):
            want.setdefault(f"bnlab/shift/{name}", {})[r["step"]] = row[SHIFT]
            want.setdefault(f"bnlab/shift_li/{name}", {})[r["step"]] = row[SHIFT_LI]
        m = r["metrics"]
        want.setdefault("bnlab/val_acc", {})[r["step"]] = m["val_acc"]
        want.setdefault("bnlab/train_mode_gap", {})[r["step"]] = (
            m["val_acc"] - m["val_acc_train_mode"]
        )
    summary = lines[-1]["summary"]
    return names, want, summary


def check(got: dict[str, dict[int, float]], want: dict[str, dict[int, float]], summary) -> None:
    for key, series in want.items():
        assert got[key] == pytest.approx(series, rel=1e-5), key
    assert got["bnlab/test_acc_eval"] == pytest.approx({12: summary["test_acc_eval"]})
    gap = summary["test_acc_recalibrated"] - summary["test_acc_eval"]
    assert got["bnlab/recalibration_gap"] == pytest.approx({12: gap})
    assert got["bnlab/test_acc_train_mode/8"] == pytest.approx(
        {12: summary["test_acc_train_mode"]["8"]}
    )


def test_tensorboard_summary_writer(tmp_path):
    writer = SummaryWriter(str(tmp_path / "tb"))
    run = bnlab.init(name="tb", mode="offline", dir=tmp_path, mirror=writer, progress=False)
    train(run)
    writer.close()
    names, want, summary = recorded(run)
    acc = ea.EventAccumulator(str(tmp_path / "tb"), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    got = {t: {e.step: e.value for e in acc.Scalars(t)} for t in acc.Tags()["scalars"]}
    assert len([t for t in got if t.startswith("bnlab/shift/")]) == len(names)
    check(got, want, summary)


def test_mlflow_run_on_a_file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it behind a flag
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    try:
        with mlflow.start_run() as active:
            run = bnlab.init(
                name="mlflow", mode="offline", dir=tmp_path, mirror=active, progress=False
            )
            train(run)
        client = MlflowClient()
        names, want, summary = recorded(run)
        keys = [*want, "bnlab/test_acc_eval", "bnlab/recalibration_gap"]
        keys.append("bnlab/test_acc_train_mode/8")
        got = {
            k: {m.step: m.value for m in client.get_metric_history(active.info.run_id, k)}
            for k in keys
        }
    finally:
        mlflow.set_tracking_uri(None)
    check(got, want, summary)


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of an offline W&B run, read from its .wandb file (a LevelDB-style log
    of protobuf records after a 7-byte header; 32 KiB blocks, 7-byte record headers)."""
    (path,) = run_dir.glob("run-*.wandb")
    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    records, part = [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            part = chunk
        elif kind == 3:
            part += chunk
        elif kind == 4:
            records.append(part + chunk)
    rows = []
    for raw in records:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    return rows


def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    wb = wandb.init(project="bnlab-bridge", dir=str(tmp_path), mode="offline")
    try:
        run = bnlab.init(name="wandb", mode="offline", dir=tmp_path, mirror=wb, progress=False)
        train(run)
        wb.log({"own_metric": 1.0})  # the user's own logging goes on beside bnlab's
    finally:
        wb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    got: dict[str, dict[int, float]] = {}
    for row in wandb_history(run_dir):
        if "bnlab/step" in row:
            for k, v in row.items():
                if k.startswith("bnlab/") and k != "bnlab/step":
                    got.setdefault(k, {})[row["bnlab/step"]] = v
    names, want, summary = recorded(run)
    check(got, want, summary)
    assert os.environ.get("WANDB_MODE") == "offline"


def test_a_failing_tracker_never_stops_training(tmp_path, caplog):
    class Broken:
        def scalars(self, step, values):
            raise OSError("disk full")

    run = bnlab.init(name="x", mode="offline", dir=tmp_path, mirror=Broken(), progress=False)
    train(run, steps=8)
    assert "mirror Broken failed (disk full); left out" in caplog.text
    assert json.loads(run.spool_path.read_text().splitlines()[-1])["status"] == "succeeded"
    with pytest.raises(TypeError, match="SummaryWriter"):
        bnlab.init(name="x", mode="offline", dir=tmp_path / "b", mirror=object())
