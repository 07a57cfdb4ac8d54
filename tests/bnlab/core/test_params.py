"""estimate_params (backend, no torch) agrees with the model torch builds."""

from __future__ import annotations

import pytest

from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.params import DATASET_SHAPES, estimate_params
from tests.utils.runs import make_config

CASES = [
    make_config(),
    make_config(model__widths=[256, 256, 256], model__batchnorm__affine=False),
    make_config(model__block=["batchnorm", "linear", "activation"], model__widths=[64, 32]),
    make_config(model__block=["linear", "activation"], model__widths=[10]),
    make_config(
        dataset={"name": "mnist1d"},
        model__arch="cnn",
        model__block=["conv", "batchnorm", "activation"],
        model__widths=[8, 16],
    ),
    make_config(
        dataset={"name": "cifar10", "path": "c"},
        model__arch="cnn",
        model__block=["dropout", "batchnorm", "conv", "activation"],
        model__widths=[32, 64, 128],
    ),
    make_config(dataset={"name": "synthetic"}, model__widths=[128]),
]


@pytest.mark.parametrize("cfg", CASES)
def test_estimate_params_matches_torch_model(cfg):
    """The count equals the parameters of the model torch actually builds (MLPs and CNNs)."""
    model_mod = pytest.importorskip("bnlab.engine.model")
    config = ExperimentConfig.model_validate(cfg)
    shape, classes = DATASET_SHAPES[config.dataset.name]
    net = model_mod.build_model(config.model, shape, classes)
    assert estimate_params(config) == sum(p.numel() for p in net.parameters())


def test_estimate_params_upload_uses_its_shape():
    """An upload is sized from its feature and class counts."""
    cfg = ExperimentConfig.model_validate(
        make_config(
            dataset={"name": "upload", "upload_id": "u"}, model__widths=[4], model__block=["linear"]
        )
    )
    assert estimate_params(cfg, ((7,), 3)) == 7 * 4 + 4 + 4 * 3 + 3
