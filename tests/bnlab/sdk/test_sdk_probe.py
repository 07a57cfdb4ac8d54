"""The SDK on models a user wrote (no server: offline mode, the spool file is what would be sent).

Checks against independent computations: the BN statistics the SDK reports equal the batch
statistics hooks see in each training forward, averaged over the window, and the eval-mode
statistics of the held-out batch; training is bit-identical with and without bnlab; nothing is
left on the model; run.step() never reads a value back from the device.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import bnlab
from bnlab.core.registry import LAYER_KEYS
from bnlab.sdk.probe import layout
from tests.bnlab.sdk.models import Flavours, TinyResNet, cifar_like

torch.set_num_threads(1)


def spool(run: bnlab.Run) -> list[dict]:
    return [json.loads(line) for line in Path(run.spool_path).read_text().splitlines()]


def offline(tmp_path: Path, **kw) -> bnlab.Run:
    return bnlab.init(name="test", mode="offline", dir=tmp_path, **kw)


def test_name_every_bn_and_dropout_by_module_path_and_find_feeding_weights():
    model = TinyResNet(p=0.2)
    x, _ = cifar_like(4)
    units, drops, skipped = layout(model, x)
    expected = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    assert [u.name for u in units] == expected and not skipped
    assert "stage1.0.bn2" in expected and "stage2.0.shortcut.1" in expected
    feeder = {u.name: u.weight for u in units}
    assert feeder["stem.1"] is model.stem[0].weight
    assert feeder["stage1.0.bn2"] is model.stage1[0].conv2.weight  # through the dropout
    # pre-activation: bn2 is fed by conv1 of its own block, bn1 by the previous block's conv2
    assert feeder["stage1.1.bn2"] is model.stage1[1].conv1.weight
    assert feeder["stage1.1.bn1"] is model.stage1[0].conv2.weight
    assert feeder["stage2.0.shortcut.1"] is model.stage2[0].shortcut[0].weight
    before = {d.name: d.before_bn for d in drops}
    assert before == {
        "stage1.0.drop": "stage1.0.bn2",
        "stage2.0.drop": "stage2.0.bn2",
        "head.2": None,
    }


def test_find_every_bn_flavour_and_dropout_kind():
    model = Flavours()
    x = torch.randn(6, 1, 4, 4, 4)
    units, drops, skipped = layout(model, x)
    assert [u.name for u in units] == ["bn3d", "sync", "blocks.a.1"]
    assert skipped == ["blocks.b"]  # no running statistics: nothing to compare with
    kinds = {d.name: (d.kind, d.rate, d.before_bn) for d in drops}
    assert kinds == {
        "drop2d": ("bernoulli", 0.1, "sync"),
        "blocks.a.0": ("AlphaDropout", 0.1, "blocks.a.1"),
    }


def _batch_stat_hooks(model: nn.Module, names: list[str], store: dict) -> list:
    """Independent: each BN's per-channel batch mean and biased variance in every training
    forward, reduced to the channel mean (as the SDK reports per layer)."""
    mods = dict(model.named_modules())

    def hook(name):
        def fn(mod, args):
            if mod.training:
                h = args[0].detach().double()
                dims = (0,) if h.dim() == 2 else (0,) + tuple(range(2, h.dim()))
                store.setdefault(name, []).append(
                    (h.mean(dims).mean().item(), h.var(dims, unbiased=False).mean().item())
                )

        return fn

    return [mods[n].register_forward_pre_hook(hook(n)) for n in names]


def test_report_train_and_eval_statistics_of_every_bn(tmp_path):
    torch.manual_seed(0)
    model = TinyResNet(p=0.3)
    x, y = cifar_like(96)
    x_val, _ = cifar_like(40, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = offline(tmp_path)
    run.watch(model, held_out=x_val, every=4, batch_size=16)
    names = run.probe.names
    seen: dict[str, list] = {}
    handles = _batch_stat_hooks(model, names, seen)
    for i in range(0, 96, 16):
        loss = F.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step(loss=loss.detach())
        if i == 48:  # right after the first probe (step 4): the window is steps 1-4
            first = {n: seen[n][:4] for n in names}
    for h in handles:
        h.remove()
    # eval-mode input statistics of the held-out batch, computed independently after the run
    run.finish()
    records = [r for r in spool(run) if "step" in r]
    assert [r["step"] for r in records] == [4, 6]
    rec = records[0]["layers"]
    for i, name in enumerate(names):
        got = dict(zip(LAYER_KEYS, rec[i], strict=False))
        means, variances = zip(*first[name], strict=False)
        assert got["train_mean"] == pytest.approx(sum(means) / 4, abs=2e-4)
        assert got["train_var"] == pytest.approx(sum(variances) / 4, rel=2e-3)
        assert got["grad_norm"] is not None and got["grad_norm"] > 0
    # the last record: eval-mode statistics of x_val against the final model, checked directly
    last = records[-1]["layers"]
    mods = dict(model.named_modules())
    eval_in: dict[str, torch.Tensor] = {}
    hs = [
        mods[n].register_forward_pre_hook(
            lambda m, a, n=n: eval_in.__setitem__(n, a[0].detach().double())
        )
        for n in names
    ]
    model.eval()
    with torch.no_grad():
        model(x_val)
    for h in hs:
        h.remove()
    for i, name in enumerate(names):
        h, bn = eval_in[name], mods[name]
        dims = (0, 2, 3)
        var = h.var(dims, unbiased=False)
        ratio = (var + bn.eps) / (bn.running_var.double() + bn.eps)
        shift = torch.maximum(ratio, 1 / ratio).mean().item()
        got = dict(zip(LAYER_KEYS, last[i], strict=False))
        assert got["eval_mean"] == pytest.approx(h.mean(dims).mean().item(), abs=1e-4)
        assert got["eval_var"] == pytest.approx(var.mean().item(), rel=1e-4)
        assert got["running_var"] == pytest.approx(bn.running_var.mean().item(), rel=1e-5)
        assert got["shift"] == pytest.approx(shift, rel=1e-4)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, run: bnlab.Run | None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for i in range(0, len(x), 16):
        loss = F.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if run is not None:
            run.step(loss=loss.detach(), lr=0.05)


@pytest.mark.parametrize("make", [TinyResNet, Flavours], ids=["resnet", "flavours"])
def test_train_bit_identically_and_leave_nothing_on_the_model(tmp_path, make):
    torch.manual_seed(0)
    model = make()
    if make is Flavours:
        x, y = torch.randn(96, 1, 4, 4, 4), torch.randint(0, 3, (96,))
    else:
        x, y = cifar_like(96)
    twin = copy.deepcopy(model)
    keys = list(model.state_dict())
    torch.manual_seed(1)
    _train(model, x, y, None)
    plain_rng = torch.get_rng_state()
    torch.manual_seed(1)
    run = offline(tmp_path)
    run.watch(twin, held_out=(x[:32], y[:32]), every=2)
    _train(twin, x, y, run)
    run.evaluate(twin, (x, y), train_data=(x, y))
    run.finish()
    assert torch.equal(torch.get_rng_state(), plain_rng)  # the probe drew no random number
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=False):
        assert torch.equal(a, b), name
    assert list(twin.state_dict()) == keys
    for m in twin.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), m
        for b in m.buffers(recurse=False):
            assert b._base is None  # no longer a view of the probe's flat tensor
    assert any(r.get("type") == "finish" and r["status"] == "succeeded" for r in spool(run))


def test_step_never_reads_the_device(tmp_path, monkeypatch):
    """Between probes run.step() calls nothing that syncs (item, tolist, bool, float, numpy)."""
    model = TinyResNet()
    x, y = cifar_like(32)
    run = offline(tmp_path)
    run.watch(model, held_out=x[:8], every=1000, batch_size=16)
    losses = [F.cross_entropy(model(x[:16]), y[:16]) for _ in range(3)]
    calls = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor,
            name,
            lambda self, *a, _n=name, _o=original, **k: (calls.append(_n), _o(self, *a, **k))[1],
        )
    for loss in losses:
        run.step(loss=loss.detach(), lr=0.1, acc=torch.tensor(0.5))
    monkeypatch.undo()
    assert calls == []
    run.finish()
    rec = [r for r in spool(run) if "step" in r][-1]
    assert rec["step"] == 3 and rec["metrics"]["lr"] == 0.1 and rec["metrics"]["train_acc"] == 0.5
    want = torch.stack([loss.detach() for loss in losses]).mean().item()
    assert rec["metrics"]["train_loss"] == pytest.approx(want, rel=1e-6)


def test_end_failed_on_exception_and_cancelled_on_ctrl_c(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with offline(tmp_path / "a") as run:
            run.step(loss=1.0)
            raise ValueError("boom")
    end = spool(run)[-1]
    assert (end["type"], end["status"], end["error"]) == ("finish", "failed", "ValueError: boom")
    with pytest.raises(KeyboardInterrupt):
        with offline(tmp_path / "b") as run:
            raise KeyboardInterrupt
    assert spool(run)[-1]["status"] == "cancelled"


def test_end_diverged_when_the_loss_is_not_finite(tmp_path):
    run = offline(tmp_path)
    run.watch(TinyResNet(), held_out=cifar_like(8)[0], every=2, batch_size=8)
    for v in (1.0, 2.0, float("nan"), 1.0):
        run.step(loss=torch.tensor(v))
    run.finish()
    lines = spool(run)
    assert [r["metrics"]["train_loss"] for r in lines if "step" in r] == [1.5, None]
    assert lines[-1]["status"] == "diverged" and "step 4" in lines[-1]["error"]


@pytest.mark.parametrize("total_steps", [None, 13])
def test_train_mode_pass_at_one_probe_in_train_mode_every(tmp_path, total_steps):
    """val_acc_train_mode is measured at probes 1 and 4 (train_mode_every=3), at the planned
    last step or finish()'s partial window, null at the other probes; the other held-out
    metrics at every probe; the value where measured equals a pass at every probe."""

    def records(every_tm: int, sub: str) -> list[dict]:
        torch.manual_seed(0)
        model = TinyResNet(p=0.3)
        x, y = cifar_like(13 * 8)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = offline(tmp_path / sub, total_steps=total_steps)
        run.watch(model, held_out=cifar_like(24, seed=1), every=2, train_mode_every=every_tm)
        for i in range(0, 13 * 8, 8):
            loss = F.cross_entropy(model(x[i : i + 8]), y[i : i + 8])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss.detach())
        run.finish()
        return [r for r in spool(run) if "step" in r]

    sparse, dense = records(3, "sparse"), records(1, "dense")
    assert [r["step"] for r in sparse] == [2, 4, 6, 8, 10, 12, 13]
    measured = [r["step"] for r in sparse if r["metrics"].get("val_acc_train_mode") is not None]
    assert measured == [2, 8, 13]
    assert all(r["metrics"]["val_acc"] is not None for r in sparse)
    for s, d in zip(sparse, dense, strict=True):
        assert s["layers"] == d["layers"]  # training and every BN statistic untouched
        if s["step"] in measured:
            assert s["metrics"]["val_acc_train_mode"] == d["metrics"]["val_acc_train_mode"]
    with pytest.raises(ValueError, match="train_mode_every"):
        offline(tmp_path / "bad").watch(TinyResNet(), cifar_like(8), train_mode_every=0)
