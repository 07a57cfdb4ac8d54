"""Pure-python parameter count of the model an ExperimentConfig builds (for BNLAB_MAX_PARAMS).

The backend may not import torch or the worker, so this counts without building: a test
checks it against the parameters of the model the engine builds. It counts every
linear/3x3-conv weight and bias, BN's affine pair on the channels it normalises, and the
classifier (CNNs end in a global average pool, so the classifier sees only the last width).
"""

from __future__ import annotations

import math

from bnlab.core.registry import COARSE_CLASSES, DATASETS, RESIDUAL_ARCHS, WEIGHT_LAYER
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.netspec import build_spec

# dataset name -> (input shape (C, H, W), classes), from the registry (uploads carry their own).
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    d.name: (d.shape, d.classes) for d in DATASETS.values() if d.shape is not None
}


def input_spec(
    cfg: ExperimentConfig, upload_shape: tuple[tuple[int, ...], int] | None = None
) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of the config's dataset; uploads pass their own shape."""
    if cfg.dataset.name == "upload":
        if upload_shape is None:
            raise ValueError("an upload's shape is needed to size its model")
        return upload_shape
    shape, classes = DATASET_SHAPES[cfg.dataset.name]
    if cfg.dataset.label_mode == "coarse":  # the classifier has one output per superclass
        classes = COARSE_CLASSES
    return shape, classes


def estimate_params(
    cfg: ExperimentConfig, upload_shape: tuple[tuple[int, ...], int] | None = None
) -> int:
    """Trainable parameters of `cfg`'s model. Uploads: ((features,), classes) means one channel."""
    shape, classes = input_spec(cfg, upload_shape)
    if cfg.model.arch in RESIDUAL_ARCHS:  # counted layer by layer from the net's spec
        return build_spec(cfg.model, shape, classes).params
    shape = (1, 1, *shape) if len(shape) == 1 else shape
    model, mlp = cfg.model, cfg.model.arch == "mlp"
    weight = WEIGHT_LAYER[model.arch]
    affine = "batchnorm" in model.block and model.batchnorm.affine
    bn_before = affine and model.block.index("batchnorm") < model.block.index(weight)
    channels, total = (math.prod(shape) if mlp else shape[0]), 0
    for width in model.widths:
        fan_in = channels if mlp else channels * 9  # 3x3 kernels
        total += fan_in * width + width
        if affine:
            total += 2 * (channels if bn_before else width)
        channels = width
    return total + channels * classes + classes
