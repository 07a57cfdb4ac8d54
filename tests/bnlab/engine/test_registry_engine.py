"""Drift tests, engine part: the engine's loaders, layers and probe agree with the registry.

Dropout noise is checked against the registry's closed-form moments by sampling (an
independent computation: the engine's own random draws, not the formula).
"""

from __future__ import annotations

import math

import pytest
import torch

from bnlab.core import registry
from bnlab.core.schema.experiment import DatasetConfig, ModelConfig
from bnlab.engine import activations as activations_mod
from bnlab.engine import data as data_mod
from bnlab.engine import dropout as dropout_mod
from bnlab.engine import model as model_mod
from bnlab.engine.probes import BNProbe, predicted_shift
from tests.utils.datasets import write_cifar, write_cifar100, write_mnist

# A writer of a tiny dataset per registry folder format (a new format needs one here).
FOLDER_WRITERS = {
    "idx": write_mnist,
    "cifar_pickle": write_cifar,
    "cifar100_pickle": write_cifar100,
}


@pytest.mark.parametrize("name", [n for n in registry.DATASET_NAMES if n != "upload"])
def test_loader_gives_registry_shape(name, tmp_path):
    """Every registry dataset loads, with the registry's input shape and class count."""
    spec = registry.DATASETS[name]
    root, path = tmp_path / "datasets", None
    if spec.needs_path:
        assert spec.source in data_mod.FOLDER_READERS, f"no reader for {spec.source}"
        assert spec.source in FOLDER_WRITERS, f"tests: no writer for {spec.source}"
        FOLDER_WRITERS[spec.source](root / name)
        path = name
    else:
        assert name in data_mod.ARRAY_READERS, f"no reader for dataset {name}"
    data = data_mod.load_dataset(DatasetConfig(name=name, path=path), datasets_root=root)
    assert data.in_shape == spec.shape
    assert data.n_classes <= spec.classes  # tiny fixtures may miss a class, never add one
    if not spec.needs_path:
        assert data.n_classes == spec.classes


def test_every_reader_is_a_registry_dataset():
    names = set(registry.DATASET_NAMES)
    assert set(data_mod.ARRAY_READERS) <= names
    sources = {d.source for d in registry.DATASETS.values() if d.needs_path}
    assert set(data_mod.FOLDER_READERS) <= sources


def test_engine_layers_match_registry():
    assert set(dropout_mod._DROPOUTS) == set(registry.DROPOUT_KIND_NAMES)
    assert set(activations_mod.ACTIVATIONS) == set(registry.ACTIVATIONS)
    assert set(model_mod.ROLES) == set(registry.BLOCK_LAYERS)


@pytest.mark.parametrize("kind", registry.DROPOUT_KIND_NAMES)
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_noise_has_registry_moments(kind, rate):
    """The engine's noise g: sample mean and variance within 5 standard errors of the registry's."""
    torch.manual_seed(0)
    n = 400_000
    layer = dropout_mod.get_dropout_layer(kind, rate).train()
    g = layer(torch.ones(n, 1, dtype=torch.float64)).flatten()
    mean, var = registry.noise_moments(kind, rate)
    se_mean = math.sqrt(var / n)
    # Var of the sample variance ≈ (μ4 − σ⁴)/n; bound μ4 by the sample's own fourth moment.
    se_var = math.sqrt(((g - g.mean()) ** 4).mean().item() / n)
    assert abs(g.mean().item() - mean) < 5 * se_mean
    assert abs(g.var().item() - var) < 5 * se_var


def test_predicted_shift_refuses_unknown_kind():
    t = torch.ones(3)
    with pytest.raises(ValueError, match="model.dropout.kind"):
        predicted_shift("concrete", 0.3, t, t)


@pytest.mark.parametrize("kind", registry.DROPOUT_KIND_NAMES)
def test_predicted_shift_matches_sampled_dropout(kind):
    """predicted_shift equals the variance ratio of the engine's dropout applied to samples."""
    torch.manual_seed(1)
    x = torch.randn(200_000, 4, dtype=torch.float64) * 0.7 + torch.tensor([0.0, 0.5, 1.0, 2.0])
    layer = dropout_mod.get_dropout_layer(kind, 0.4).train()
    measured = layer(x).var(0) / x.var(0)
    predicted = predicted_shift(kind, 0.4, x.mean(0), x.var(0, unbiased=False))
    torch.testing.assert_close(predicted, measured, rtol=0.03, atol=0)


@pytest.mark.parametrize("block", [["linear", "batchnorm", "activation"], ["linear", "activation"]])
def test_probe_rows_carry_every_layer_key(block):
    """Each probe row is index, name and every registry layer key: the contract with ingest."""
    torch.manual_seed(0)
    net = model_mod.build_model(ModelConfig(widths=[6, 6], block=block), (1, 1, 5), 3).train()
    probe = BNProbe(net)
    x, y = torch.randn(32, 1, 1, 5), torch.randint(0, 3, (32,))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    probe.step()
    _, rows = probe.record(x, 32)
    assert [set(r) for r in rows] == [{"index", "name", *registry.LAYER_KEYS}] * 2
    if "batchnorm" not in block:
        assert all(r[k] is None for r in rows for k in registry.BN_LAYER_KEYS)
    assert all(r["grad_norm"] is not None for r in rows)


@pytest.mark.parametrize(
    "name", [n for n, d in registry.DATASETS.items() if d.source != "upload" and not d.needs_path]
)
@pytest.mark.parametrize("limit", [None, 100])
def test_split_sizes_without_loading_match_the_loader(name, limit):
    """bnlab/core/schema/splits.py (the API's batch-size check) sizes the training split exactly."""
    from bnlab.core.schema.splits import dataset_total, train_split_size

    spec = registry.DATASETS[name]
    cfg = DatasetConfig(name=name, limit=limit, val_fraction=0.3)
    expected = train_split_size(
        dataset_total(name, None, None),
        own_test_split=spec.own_test_split,
        val_fraction=0.3,
        limit=limit,
    )
    assert len(data_mod.load_dataset(cfg).x_train) == expected


def test_engine_refuses_batch_larger_than_training_split():
    """A direct engine call (no API in front) names train.batch_size and the split size."""
    from bnlab.engine.train import ConfigError, train

    cfg = {
        "dataset": {"name": "digits", "limit": 100},
        "train": {"batch_size": 128, "epochs": 1},
        "model": {"widths": [8]},
    }
    with pytest.raises(ConfigError, match=r"train\.batch_size: 128 .* \(80 samples"):
        train(cfg)
