"""The gradient-noise probe (probe.grad_noise → metric grad_cos, bnlab/engine/gradnoise.py)."""

from __future__ import annotations

import statistics

import pytest
import torch

from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.engine.data import load_dataset
from bnlab.engine.dropout import Dropout
from bnlab.engine.gradnoise import grad_cosine
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import train

TINY = {
    "dataset": {"name": "mnist1d", "n_samples": 1000},
    "model": {"widths": [32, 32]},
    "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
    "probe": {"every_steps": 5, "train_mode_test_batch_sizes": [8], "recalibrate": False},
}


def _run(grad_noise: bool) -> tuple[MemorySink, torch.nn.Module]:
    cfg = {**TINY, "probe": {**TINY["probe"], "grad_noise": grad_noise}}
    sink = MemorySink()
    return sink, train(cfg, sink).model


def test_report_grad_cos_only_when_asked():
    """With probe.grad_noise every probe carries a cosine in [-1, 1]; without it, no grad_cos at
    all."""
    on, _ = _run(True)
    off, _ = _run(False)
    cos = on.metrics()["grad_cos"]
    assert len(cos) == len(on.records) > 3 and all(-1.0 <= c <= 1.0 for c in cos)
    assert "grad_cos" not in off.metrics()


def test_leave_training_unchanged_by_grad_noise():
    """Measuring grad_cos changes nothing else: same weights, BN buffers, losses and BN probe
    statistics as the same run without it (RNG forked, BN stats restored, no step, probe hook
    bypassed)."""
    (on, model_on), (off, model_off) = _run(True), _run(False)
    for (name, a), (_, b) in zip(
        model_on.state_dict().items(), model_off.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert on.metrics()["train_loss"] == off.metrics()["train_loss"]
    assert on.layers()["layers"][0]["train_var"] == off.layers()["layers"][0]["train_var"]


def test_leave_model_state_and_grads_untouched():
    """grad_cosine restores BN running stats and leaves every param.grad as it was."""
    cfg = ExperimentConfig.model_validate(TINY)
    data = load_dataset(cfg.dataset, seed=0)
    model = train(cfg, data=data).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    grad_cosine(model, data.x_train, data.y_train, 32, step=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(
        (g is None and p.grad is None) or torch.equal(g, p.grad)
        for g, p in zip(grads, model.parameters(), strict=True)
    )


def test_lower_cosine_with_per_batch_masks_at_fixed_weights():
    """At the same weights (early in training), per-batch dropout masks give a noisier mini-batch
    gradient than per-sample masks: a lower mean cosine to the reference gradient
    (docs/science.md §6)."""
    cfg = ExperimentConfig.model_validate(
        {
            "dataset": {"name": "mnist1d", "n_samples": 4000},
            "model": {"widths": [256, 256, 256]},
            "train": {"epochs": 1, "device": "cpu"},
            "probe": {"every_steps": 100, "recalibrate": False, "train_mode_test_batch_sizes": [8]},
        }
    )
    data = load_dataset(cfg.dataset, seed=0)
    model = train(cfg, data=data).model
    mean_cos = {}
    for mask in ("per_sample", "per_batch"):
        for m in model.modules():
            if isinstance(m, Dropout):
                m.mask = mask
        mean_cos[mask] = statistics.fmean(
            grad_cosine(model, data.x_train, data.y_train, 128, s) for s in range(12)
        )
    assert mean_cos["per_batch"] < mean_cos["per_sample"] - 0.03, mean_cos


@pytest.mark.parametrize("n_train", [40, 200])
def test_measure_with_few_training_samples(n_train):
    """Fewer training samples than the reference wants (even fewer than one batch) still gives a
    cosine."""
    cfg = ExperimentConfig.model_validate(TINY)
    data = load_dataset(cfg.dataset, seed=0)
    model = train(cfg, data=data).model
    c = grad_cosine(model, data.x_train[:n_train], data.y_train[:n_train], min(32, n_train), step=0)
    assert -1.0 <= c <= 1.0
