"""`Accelerator(log_with=BnlabTracker(...))` with the real Accelerate (issue 23 item 1): the
run made by init_trackers with its config, the model (as prepared) watched on the user's
validation loader, optimizer steps counted by a hook (gradient accumulation: real steps only),
accelerator.log values as the script's own series, end_training ending the run."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from bnlab.integrations.accelerate import BnlabTracker
from tests.bnlab.integrations.itg import get, sqlite_server
from tests.bnlab.sdk.models import TinyResNet, cifar_like

torch.set_num_threads(1)


def test_accelerate_tracker_makes_the_run(tmp_path):
    torch.manual_seed(0)
    x, y = cifar_like(16 * 12)
    xv, yv = cifar_like(48, seed=3)
    with sqlite_server(tmp_path / "server") as server:
        tracker = BnlabTracker(
            "accelerate-run", url=server.url, dir=tmp_path / "spool", progress=False, every=2
        )
        accelerator = Accelerator(log_with=tracker, gradient_accumulation_steps=2, cpu=True)
        accelerator.init_trackers("cifar", config={"lr": 0.05, "arch": "tiny"})
        model = TinyResNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        train = DataLoader(TensorDataset(x, y), batch_size=16)
        val = DataLoader(TensorDataset(xv, yv), batch_size=16)
        model, opt, train, val = accelerator.prepare(model, opt, train, val)
        tracker.watch(model, val, optimizer=opt)  # every=2 from the tracker
        for _epoch in range(2):
            for xb, yb in train:
                with accelerator.accumulate(model):
                    loss = F.cross_entropy(model(xb), yb)
                    accelerator.backward(loss)
                    opt.step()
                    opt.zero_grad()
                    tracker.step(loss=loss.detach())
            accelerator.log({"val/acc": 0.5, "epoch_loss": 1.0}, step=tracker.step_count)
        accelerator.end_training()
        run = get(server, f"/api/runs/{tracker.run.id}")
        metrics = get(server, f"/api/runs/{tracker.run.id}/metrics")
        extra = get(server, f"/api/runs/{tracker.run.id}/extra-metrics")["metrics"]
    assert run["status"] == "succeeded" and run["name"] == "accelerate-run"
    assert run["config"] == {"lr": 0.05, "arch": "tiny"}
    assert run["summary"]["steps"] == 12  # 24 batches, one optimizer step per 2
    assert metrics["step"] == [2, 4, 6, 8, 10, 12]
    assert all(v is not None for v in metrics["train_loss"] + metrics["val_acc"])
    assert extra["val/acc"]["step"] == [6, 12] and extra["epoch_loss"]["value"] == [1.0, 1.0]
    assert run["summary"]["held_out_samples"] == 48  # the validation loader, all of it


def test_accelerate_tracker_without_an_optimizer_hook(tmp_path):
    tracker = BnlabTracker(mode="offline", dir=tmp_path, progress=False)
    accelerator = Accelerator(log_with=tracker, cpu=True)
    accelerator.init_trackers("p")  # no config: the run is made at first use
    model = accelerator.prepare(TinyResNet())
    tracker.watch(model, cifar_like(16, seed=1), every=3)
    for _ in range(6):
        model(cifar_like(8)[0]).sum().backward()
        tracker.step(loss=1.0)
    accelerator.end_training()
    lines = [json.loads(s) for s in tracker.run.spool_path.read_text().splitlines()]
    assert [r["step"] for r in lines if "layers" in r] == [3, 6]
    assert lines[-1]["status"] == "succeeded"
