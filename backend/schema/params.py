"""Pure-python parameter count of the model an ExperimentConfig builds (for BNLAB_MAX_PARAMS).

An estimate that errs high: it counts every weight and bias, BN's affine pair, and for a CNN a
classifier on the flattened last feature map (no global pooling assumed). It needs no torch, so
the API can refuse an oversized model before it is queued.
"""

from __future__ import annotations

import math

from backend.schema.experiment import ExperimentConfig

# dataset name -> (input shape without the batch axis, number of classes)
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((64,), 10),  # scikit-learn 8x8 digits, flattened
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "mnist1d": ((40,), 10),
    "synthetic": ((32,), 10),  # seeded Gaussian clusters: 32 features, 10 classes
}


def input_spec(cfg: ExperimentConfig, upload_shape: tuple[tuple[int, ...], int] | None = None
               ) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of the config's dataset; uploads pass their own shape."""
    if cfg.dataset.name == "upload":
        if upload_shape is None:
            raise ValueError("an upload's shape is needed to size its model")
        return upload_shape
    return DATASET_SHAPES[cfg.dataset.name]


def _bn(cfg: ExperimentConfig, width: int) -> int:
    has_bn = "batchnorm" in cfg.model.block and cfg.model.batchnorm.affine
    return 2 * width if has_bn else 0


def _mlp_params(cfg: ExperimentConfig, shape: tuple[int, ...], classes: int) -> int:
    fan_in, total = math.prod(shape), 0
    for width in cfg.model.widths:
        total += fan_in * width + width + _bn(cfg, width)
        fan_in = width
    return total + fan_in * classes + classes


def _cnn_params(cfg: ExperimentConfig, shape: tuple[int, ...], classes: int) -> int:
    # A flat input is treated as one channel whose spatial area is the feature count.
    channels, area = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, shape[0])
    side_h, side_w = (shape[1], shape[2]) if len(shape) == 3 else (area, 1)
    total = 0
    for width in cfg.model.widths:
        total += channels * width * 9 + width + _bn(cfg, width)  # 3x3 conv + bias + BN affine
        channels = width
        side_h, side_w = max(1, side_h // 2), max(1, side_w // 2)  # 2x2 pooling after each block
    return total + channels * side_h * side_w * classes + classes


def estimate_params(cfg: ExperimentConfig, upload_shape: tuple[tuple[int, ...], int] | None = None
                    ) -> int:
    """Trainable parameters of `cfg`'s model (an upper-leaning estimate)."""
    shape, classes = input_spec(cfg, upload_shape)
    if cfg.model.arch == "cnn":
        return _cnn_params(cfg, shape, classes)
    return _mlp_params(cfg, shape, classes)
