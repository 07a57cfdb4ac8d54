"""The dropout_equal_noise preset (backend/presets/dropout_equal_noise.json): at equal noise
variance uniform dropout (Uout, beta = sqrt(3)) shifts the first BN as much as bernoulli 0.5;
at equal rate (beta = 0.5) far less (docs/science.md §2)."""

from __future__ import annotations

import math

import pytest
import torch

from backend.crud.sweeps import cell_configs
from backend.presets import load_presets
from bnlab.core.registry import equal_noise_rate, noise_moments
from bnlab.engine.train import train


def _arms() -> dict[tuple[str, float], dict]:
    preset = next(p for p in load_presets() if p.id == "dropout_equal_noise")
    arms = {}
    for _, cfg in cell_configs(preset.sweep):
        d = cfg.model_dump(mode="json")
        d["dataset"]["n_samples"], d["train"]["epochs"] = 4000, 6
        d["probe"].update({"train_mode_test_batch_sizes": [64], "recalibrate": False})
        arms[(cfg.model.dropout.kind, round(cfg.model.dropout.rate, 3))] = d
    return arms


def test_hold_equal_noise_pairs_in_preset():
    """The preset's uniform beta matches bernoulli 0.5's noise variance (r/(1-r) = 1)."""
    arms = _arms()
    assert set(arms) == {
        ("bernoulli", 0.5),
        ("gaussian", 0.5),
        ("uniform", 0.5),
        ("uniform", 1.732),
    }
    assert equal_noise_rate(0.5, "bernoulli") == pytest.approx(math.sqrt(3))
    assert noise_moments("uniform", math.sqrt(3))[1] == pytest.approx(
        noise_moments("bernoulli", 0.5)[1]
    )


@pytest.mark.slow
def test_match_shift_at_equal_noise_not_at_equal_rate():
    torch.set_num_threads(1)
    arms = _arms()
    shift = {
        k: train(arms[k]).summary["shift_by_layer"]["blocks.0.bn"]
        for k in (("bernoulli", 0.5), ("uniform", 0.5), ("uniform", 1.732))
    }
    assert shift[("uniform", 1.732)] == pytest.approx(shift[("bernoulli", 0.5)], rel=0.15), shift
    assert shift[("uniform", 0.5)] - 1 < 0.3 * (shift[("bernoulli", 0.5)] - 1), shift
