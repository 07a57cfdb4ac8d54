"""The study presets (backend/presets/*.json) and the README examples (examples/*.json):
each validates through the preset loader, every run of every preset trains at a tiny size,
and the variance-shift study's outcome holds (docs/science.md §2, §7)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.crud.sweeps import cell_configs, sweep_size
from backend.presets import PRESETS_DIR, load_preset, load_presets
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.sweeps import SweepCreate
from bnlab.engine.predict import predict, predict_doc_formula
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import train

torch.set_num_threads(1)  # the machine's two cores are shared

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
STUDY_IDS = {
    "variance_shift",
    "variance_shift_rates",
    "population_stats",
    "affine_off",
    "gamma_init_relu",
    "beta_init_sigmoid",
    "saturating",
    "dropout_masks",
    "dropout_std",
    "pooling",
    "custom_inference",
}
MAX_CPU_CELLS = 8  # a CPU-sized study is at most this many grid cells, each run per seed
MIN_SEEDS = 3  # every sweep study and its full variant run this many seeds at least


def preset_by_id(preset_id: str):
    return next(p for p in load_presets() if p.id == preset_id)


def configs(preset) -> list[ExperimentConfig]:
    """Every run the preset makes, expanded like the API does."""
    return (
        [preset.config] if preset.kind == "run" else [cfg for _, cfg in cell_configs(preset.sweep)]
    )


def tiny(cfg: ExperimentConfig, **train_kw) -> dict:
    """The same experiment shrunk for a test: few samples, narrow layers, one short epoch."""
    d = cfg.model_dump(mode="json")
    d["dataset"]["limit"] = 256
    if d["dataset"]["name"] in ("mnist1d", "synthetic"):
        d["dataset"]["n_samples"] = 1000
    d["model"]["widths"] = [min(w, 16) for w in d["model"]["widths"]]
    d["train"].update({"epochs": 1, "batch_size": 32, **train_kw})
    d["probe"].update({"every_steps": 3, "eval_batches": 1, "recalibrate_samples": 64})
    return d


def test_load_every_study_preset():
    """Every study of issue 5 is a preset file that loads through the validating loader."""
    assert {p.id for p in load_presets()} >= STUDY_IDS
    for path in sorted(PRESETS_DIR.glob("*.json")):
        assert load_preset(path).id == path.stem


@pytest.mark.parametrize("preset_id", sorted(STUDY_IDS))
def test_size_preset_for_cpu(preset_id):
    """The default variant trains on a built-in dataset on the CPU in at most 8 runs."""
    preset = preset_by_id(preset_id)
    runs = configs(preset)
    seeds = len(preset.sweep.seeds or [0]) if preset.kind == "sweep" else 1
    assert len(runs) == (1 if preset.kind == "run" else sweep_size(preset.sweep))
    assert len(runs) <= MAX_CPU_CELLS * seeds
    for cfg in runs:
        assert cfg.dataset.name in ("digits", "mnist1d", "synthetic") and cfg.dataset.path is None
        assert cfg.train.device == "cpu"
    assert len({json.dumps(c.model_dump(exclude={"name"}), sort_keys=True) for c in runs}) == len(
        runs
    ), "two runs of the sweep are the same experiment"


def test_run_every_sweep_preset_with_three_seeds_or_more():
    """A study's conclusions are decided from the spread between seeds (bnlab/core/stats.py):
    every sweep preset, and its full variant, runs at least MIN_SEEDS of them."""
    for preset in load_presets():
        if preset.kind != "sweep":
            continue
        assert len(set(preset.sweep.seeds or [])) >= MIN_SEEDS, preset.id
        if preset.full is not None:
            assert len(set(preset.full.get("seeds") or [])) >= MIN_SEEDS, preset.id


@pytest.mark.parametrize("preset_id", sorted(STUDY_IDS))
def test_size_full_variant_for_gpu(preset_id):
    """The 'full' variant is the same kind, reads MNIST or CIFAR-10 from a path and picks the
    GPU."""
    preset = preset_by_id(preset_id)
    assert preset.full is not None
    if preset.kind == "sweep":
        full = SweepCreate.model_validate(preset.full)
        assert set(full.grid) == set(preset.sweep.grid)
        runs = [cfg for _, cfg in cell_configs(full)]
    else:
        runs = [ExperimentConfig.model_validate(preset.full)]
    for cfg in runs:
        assert cfg.dataset.name in ("mnist", "cifar10") and cfg.dataset.path
        assert cfg.train.device == "auto"


@pytest.mark.parametrize("preset_id", sorted(STUDY_IDS))
def test_train_every_preset_run_tiny(preset_id):
    """Every run of the preset trains to the end at a tiny size and reports the study's figures
    (each grid cell once: its other seeds take the same code path)."""
    cfgs = configs(preset_by_id(preset_id))
    for cfg in [c for c in cfgs if c.train.seed == cfgs[0].train.seed]:
        result = train(tiny(cfg))
        assert result.status == "succeeded", (cfg.name, result.error)
        s = result.summary
        assert 0.0 <= s["test_acc_eval"] <= 1.0
        assert set(s["test_acc_train_mode"]) == {
            str(b) for b in cfg.probe.train_mode_test_batch_sizes
        }
        assert (s["test_acc_recalibrated"] is not None) == cfg.probe.recalibrate
        has_bn = "batchnorm" in cfg.model.block
        assert bool(s["shift_by_layer"]) == has_bn


def _variance_shift_arms() -> dict[str, dict]:
    """The bernoulli runs of the variance_shift preset on half its data: dropout before BN / head
    only.

    Not fewer epochs: early in training the moving averages lag the fast-changing weights, so
    even a BN that never sees dropout shows a drift-shift of 1.2 after 3 epochs."""
    arms = {}
    for cfg in configs(preset_by_id("variance_shift")):
        if cfg.model.dropout.kind == "bernoulli":
            d = cfg.model_dump(mode="json")
            d["dataset"]["n_samples"] = 4000
            arms["before_bn" if "dropout" in cfg.model.block else "head_only"] = d
    return arms


@pytest.fixture(scope="module")
def variance_shift_runs() -> dict[str, dict]:
    return {arm: train(cfg).summary for arm, cfg in _variance_shift_arms().items()}


def test_match_predicted_shift_at_first_bn_after_dropout(variance_shift_runs):
    """Dropout right before BN: the first BN's measured shift is within 10 % of docs/science.md §2's
    ratio (computed from the measured BN input), and well above 1."""
    s = variance_shift_runs["before_bn"]
    measured, predicted = (
        s["shift_by_layer"]["blocks.0.bn"],
        s["shift_predicted_by_layer"]["blocks.0.bn"],
    )
    assert predicted > 1.5
    assert measured == pytest.approx(predicted, rel=0.10)


def test_keep_shift_near_one_with_head_dropout_only(variance_shift_runs):
    """Dropout only before the classifier: no BN sees dropout, every layer's shift stays near 1
    (bnlab's statistic at its noise floor: sampling noise folded above 1, not a shift) and there
    is no prediction to make."""
    s = variance_shift_runs["head_only"]
    assert s["shift_predicted_by_layer"] == {}
    assert s["shift_by_layer"] and all(1.0 <= v < 1.2 for v in s["shift_by_layer"].values())


def test_lower_grad_cos_with_per_batch_masks():
    """dropout_masks study (seed 0 runs, half the data and epochs): per-batch masks give a lower
    mean grad_cos over training than per-sample masks on the same config (docs/science.md §6)."""
    mean_cos = {}
    for cfg in configs(preset_by_id("dropout_masks")):
        if cfg.train.seed == 0:
            d = cfg.model_dump(mode="json")
            d["dataset"]["n_samples"], d["train"]["epochs"] = 4000, 5
            sink = MemorySink()
            assert train(d, sink).status == "succeeded"
            mean_cos[cfg.model.dropout.mask] = statistics.fmean(sink.metrics()["grad_cos"])
    assert mean_cos["per_batch"] < mean_cos["per_sample"] - 0.05, mean_cos


def test_reproduce_custom_inference_export_only_with_sqrt(tmp_path):
    """The custom-inference preset's export: numpy with sqrt(var + eps) reproduces eval-mode logits
    (unfolded and folded); the formula without the square root does not."""
    cfg = tiny(preset_by_id("custom_inference").config, epochs=3)
    result = train(cfg, export_dir=tmp_path)
    f = np.load(tmp_path / "model.npz", allow_pickle=False)
    for folded in (False, True):
        np.testing.assert_allclose(
            predict(f, f["test.x"], folded), f["test.logits"], atol=1e-5, rtol=0
        )
    acc = (predict(f, f["test.x"]).argmax(1) == f["test.y"]).mean()
    assert acc == pytest.approx(result.summary["test_acc_eval"], abs=1e-7)
    assert np.abs(predict_doc_formula(f, f["test.x"]) - f["test.logits"]).max() > 1e-2


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.json")), ids=lambda p: p.name)
def test_validate_example_config(path):
    """Each README example is a plain ExperimentConfig, small enough for a CPU (built-in data)."""
    cfg = ExperimentConfig.model_validate(json.loads(path.read_text()))
    assert cfg.dataset.name in ("digits", "mnist1d", "synthetic")
    assert cfg.train.epochs * (cfg.dataset.n_samples or 4000) <= 200_000


def test_ship_examples():
    """examples/ holds at least the two README examples."""
    names = {p.name for p in EXAMPLES_DIR.glob("*.json")}
    assert {"dropout_before_bn.json", "head_dropout_only.json"} <= names
