"""Pure-python parameter count of the model an ExperimentConfig builds (for BNLAB_MAX_PARAMS).

It mirrors `worker.engine.model.estimate_params` (which the backend may not import: no torch,
no worker code in the API) and a test checks the two agree: every linear/3x3-conv weight and
bias, BN's affine pair on the channels it normalises, and the classifier (CNNs end in a global
average pool, so the classifier sees only the last width).
"""

from __future__ import annotations

import math

from backend.schema.experiment import ExperimentConfig

# dataset name -> (input shape (C, H, W), classes); the same table as the engine's.
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),  # scikit-learn 8x8 digits
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "mnist1d": ((1, 1, 40), 10),
    "synthetic": ((1, 8, 8), 10),  # seeded Gaussian clusters: 64 features, 10 classes
}


def input_spec(cfg: ExperimentConfig, upload_shape: tuple[tuple[int, ...], int] | None = None
               ) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of the config's dataset; uploads pass their own shape."""
    if cfg.dataset.name == "upload":
        if upload_shape is None:
            raise ValueError("an upload's shape is needed to size its model")
        return upload_shape
    return DATASET_SHAPES[cfg.dataset.name]


def estimate_params(cfg: ExperimentConfig, upload_shape: tuple[tuple[int, ...], int] | None = None
                    ) -> int:
    """Trainable parameters of `cfg`'s model. Uploads: ((features,), classes) means one channel."""
    shape, classes = input_spec(cfg, upload_shape)
    shape = (1, 1, *shape) if len(shape) == 1 else shape
    model, mlp = cfg.model, cfg.model.arch == "mlp"
    weight = "linear" if mlp else "conv"
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
