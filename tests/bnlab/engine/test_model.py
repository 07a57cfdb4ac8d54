"""build_model (bnlab/engine/model.py), and the torch-free parameter count against it."""

import pytest
import torch
from torch import nn

from bnlab.core.schema.experiment import ExperimentConfig, ModelConfig
from bnlab.core.schema.params import estimate_params
from bnlab.engine.batchnorm import MatrixBatchNorm2d
from bnlab.engine.model import build_model, count_params

CONFIGS = [
    {},
    {
        "block": ["batchnorm", "linear", "activation", "dropout"],
        "head_dropout": 0.3,
        "activation": "gaussian",
    },
    {"block": ["linear", "activation"], "batchnorm": {"affine": False}},
    {
        "arch": "cnn",
        "widths": [4, 8, 8, 8],
        "block": ["conv", "batchnorm", "activation", "dropout"],
        "pooling": "avg",
        "batchnorm": {"impl": "matrix"},
    },
    {"arch": "cnn", "widths": [4], "block": ["conv", "dropout", "activation"], "head_dropout": 0.1},
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_estimate_params_like_built_model(cfg):
    """bnlab/core/schema/params.py's torch-free count equals the built model's parameter count
    (images and 1-D signals, sized like an upload of that shape)."""
    mc = ModelConfig.model_validate(cfg)
    config = ExperimentConfig(model=mc, dataset={"name": "upload", "upload_id": "u"})
    for shape in [(1, 8, 8), (3, 5, 5), (1, 1, 40)]:
        assert estimate_params(config, (shape, 7)) == count_params(build_model(mc, shape, 7)), shape


def test_name_children_by_role_in_block_order():
    """Block children are named by role, in the configured order, with the head after them."""
    mc = ModelConfig(
        widths=[5, 5], block=["linear", "dropout", "batchnorm", "activation"], head_dropout=0.2
    )
    names = [n for n, _ in build_model(mc, (1, 1, 4), 3).named_modules() if n]
    assert names == [
        "blocks",
        "blocks.0",
        "blocks.0.linear",
        "blocks.0.drop",
        "blocks.0.bn",
        "blocks.0.act",
        "blocks.1",
        "blocks.1.linear",
        "blocks.1.drop",
        "blocks.1.bn",
        "blocks.1.act",
        "head_drop",
        "classifier",
    ]


def test_apply_layers_in_configured_order():
    """A BN placed before the linear layer normalises the block's input channels."""
    mc = ModelConfig(widths=[6], block=["batchnorm", "linear", "activation"])
    model = build_model(mc, (1, 1, 4), 3)
    assert model.blocks[0].bn.num_features == 4 and model(torch.randn(5, 1, 1, 4)).shape == (5, 3)


def test_build_cnn_with_pooling_and_matrix_bn():
    """The CNN uses 3×3 convs, the chosen pooling after each block and BatchNorm2d (matrix impl)."""
    mc = ModelConfig(
        arch="cnn",
        widths=[4, 4],
        block=["conv", "batchnorm", "activation"],
        pooling="avg",
        batchnorm={"impl": "matrix"},
    )
    model = build_model(mc, (3, 8, 8), 10)
    assert isinstance(model.blocks[0].bn, MatrixBatchNorm2d)
    assert isinstance(model.blocks[1].pool, nn.AvgPool2d) and model.blocks[0].conv.kernel_size == (
        3,
        3,
    )
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_pool_only_along_long_side_of_signal():
    """A 1×40 signal pools 1×2 (never below one pixel), so deep CNNs accept MNIST-1D."""
    mc = ModelConfig(arch="cnn", widths=[2] * 7, block=["conv", "activation"])
    assert build_model(mc, (1, 1, 40), 10)(torch.randn(2, 1, 1, 40)).shape == (2, 10)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("gaussian", lambda x: torch.exp(-x * x)),
        ("identity", lambda x: x),
    ],
)
def test_use_configured_activation(name, fn):
    """Each activation name maps to its function (gaussian is exp(−x²))."""
    act = build_model(ModelConfig(widths=[3], activation=name), (1, 1, 2), 2).blocks[0].act
    x = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(act(x), fn(x))


def test_init_bn_affine_from_config():
    """gamma_init / beta_init / momentum=None reach every BN layer; affine off has no parameters."""
    bn = (
        build_model(
            ModelConfig(batchnorm={"gamma_init": 1.41, "beta_init": -1.0, "momentum": None}),
            (1, 1, 4),
            2,
        )
        .blocks[2]
        .bn
    )
    assert torch.all(bn.weight == 1.41) and torch.all(bn.bias == -1.0) and bn.momentum is None
    assert (
        build_model(ModelConfig(batchnorm={"affine": False}), (1, 1, 4), 2).blocks[0].bn.weight
        is None
    )
