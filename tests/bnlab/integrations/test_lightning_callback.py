"""`Trainer(callbacks=[BnlabCallback()])` with the real Lightning (issue 23 item 1): a tiny
LightningModule with BN and dropout, fitted against a real `bnlab serve`: one run, its BN
layers probed on the user's own validation data, optimizer steps counted (not accumulation
micro-batches), what the module logged at each validation epoch, the diagnostics mirrored into
the trainer's own TensorBoard logger; the same callback under `pytorch_lightning`; an
exception ending the run failed; the dashboard's Cancel stopping the fit gracefully."""

from __future__ import annotations

import json
import threading
import time

import httpx
import lightning.pytorch as L
import pytest
import pytorch_lightning as PL
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing import event_accumulator as ea
from torch.utils.data import DataLoader, TensorDataset

from bnlab.integrations.lightning import BnlabCallback
from tests.bnlab.integrations.itg import get, sqlite_server
from tests.bnlab.sdk.models import TinyResNet, cifar_like

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sqlite_server(tmp_path_factory.mktemp("lightning-server")) as s:
        yield s


def lit_class(base):
    class Lit(base):
        def __init__(self, lr: float = 0.05, p: float = 0.2, fail_at: int = -1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = TinyResNet(p=p)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, i):
            if self.global_step == self.hparams.fail_at:
                raise RuntimeError("boom at step 3")
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, i):
            x, y = batch
            self.log("val_acc", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return Lit


def loaders(n_train: int = 16 * 12):
    x, y = cifar_like(n_train)
    xv, yv = cifar_like(64, seed=3)
    return (
        DataLoader(TensorDataset(x, y), batch_size=16),
        DataLoader(TensorDataset(xv, yv), batch_size=32),
    )


def trainer(module, **kw):
    base = dict(
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return module.Trainer(**{**base, **kw})


def test_a_fit_makes_one_run_with_the_diagnostics(server, tmp_path):
    model = lit_class(L.LightningModule)()
    logger = TensorBoardLogger(tmp_path / "tb", name="exp")
    cb = BnlabCallback(
        every=2, url=server.url, dir=tmp_path / "spool", mirror="loggers", progress=False
    )
    t = trainer(L, max_epochs=2, accumulate_grad_batches=2, logger=logger, callbacks=[cb])
    t.fit(model, *loaders())
    run = get(server, f"/api/runs/{cb.run.id}")
    assert run["status"] == "succeeded" and run["name"] == "Lit"
    assert t.global_step == 12  # 2 epochs x 12 batches / accumulation 2
    assert run["summary"]["steps"] == 12 and run["total_steps"] == 12
    assert run["config"] == {"lr": 0.05, "p": 0.2, "fail_at": -1}
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert run["layer_names"] == names
    metrics = get(server, f"/api/runs/{cb.run.id}/metrics")
    assert metrics["step"] == [2, 4, 6, 8, 10, 12]
    assert all(v is not None for v in metrics["train_loss"] + metrics["val_acc"])
    assert metrics["lr"] == [0.05] * 6
    extra = get(server, f"/api/runs/{cb.run.id}/extra-metrics")["metrics"]
    assert extra["lightning/val_acc"]["step"] == [6, 12]  # each validation epoch's end
    # the held-out batch is the user's validation data: the probe's val_acc on it
    assert run["summary"]["model"]["bn_layers"] == names
    # mirrored into the trainer's own TensorBoard logger
    acc = ea.EventAccumulator(logger.log_dir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    layers = get(server, f"/api/runs/{cb.run.id}/layers")["layers"]
    first = layers[0]
    tb = [(e.step, e.value) for e in acc.Scalars(f"bnlab/shift/{first['name']}")]
    assert [s for s, _ in tb] == first["step"]
    assert [v for _, v in tb] == pytest.approx(first["shift"], rel=1e-6)
    val = [(e.step, e.value) for e in acc.Scalars("bnlab/val_acc")]
    assert [v for _, v in val] == pytest.approx(metrics["val_acc"], rel=1e-6)


def test_the_pytorch_lightning_package_too(tmp_path):
    cb = BnlabCallback(every=3, mode="offline", dir=tmp_path, progress=False)
    assert isinstance(cb, L.Callback) and isinstance(cb, PL.Callback)
    t = trainer(PL, max_epochs=1, logger=False, callbacks=[cb], num_sanity_val_steps=0)
    t.fit(lit_class(PL.LightningModule)(), *loaders())
    lines = [json.loads(s) for s in cb.run.spool_path.read_text().splitlines()]
    assert [r["step"] for r in lines if "layers" in r] == [3, 6, 9, 12]
    assert lines[-1]["type"] == "finish" and lines[-1]["status"] == "succeeded"
    assert "notes" not in lines[-1]["summary"]  # the module's val_dataloader was found


def test_an_exception_ends_the_run_failed(tmp_path):
    cb = BnlabCallback(every=2, mode="offline", dir=tmp_path, progress=False)
    t = trainer(L, max_epochs=1, logger=False, callbacks=[cb])
    with pytest.raises(RuntimeError, match="boom"):
        t.fit(lit_class(L.LightningModule)(fail_at=3), *loaders())
    end = json.loads(cb.run.spool_path.read_text().splitlines()[-1])
    assert (end["status"], end["error"]) == ("failed", "RuntimeError: boom at step 3")
    assert end["summary"]["steps"] == 3


def test_cancel_in_the_dashboard_stops_the_fit(server, tmp_path):
    cb = BnlabCallback(
        every=5, url=server.url, dir=tmp_path, progress=False, heartbeat_s=0.5, name="cancel-me"
    )

    def cancel_when_running():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if cb.run is not None and cb.run.id is not None and cb.run.step_count >= 5:
                httpx.post(f"{server.url}/api/runs/{cb.run.id}/cancel", timeout=30)
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_running, daemon=True)
    canceller.start()
    t = trainer(L, max_epochs=500, logger=False, callbacks=[cb])
    t.fit(lit_class(L.LightningModule)(), *loaders())
    canceller.join(5)
    run = get(server, f"/api/runs/{cb.run.id}")
    assert run["status"] == "cancelled" and run["error"] == "cancelled from the dashboard"
    assert 5 <= t.global_step < 500 * 12  # stopped by the cancel, long before max_epochs
    assert run["summary"]["steps"] == t.global_step
