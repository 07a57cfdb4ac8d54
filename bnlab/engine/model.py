"""build_model(cfg.model): an MLP or a small CNN whose hidden blocks follow `model.block`.

Each hidden block is a module with children named by role (`linear`|`conv`, `drop`, `bn`,
`act`, then `pool` in the CNN), registered in the configured order, so `named_modules()`
reads `blocks.0.linear`, `blocks.0.drop`, `blocks.0.bn`, ... in the dashboard. The head is
an optional `head_drop` (dropout of the same kind, "Dropout after all BN") then `classifier`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnlab.core.registry import ARCHS, RESIDUAL_ARCHS
from bnlab.core.schema.experiment import ModelConfig

from .activations import ACTIVATIONS
from .batchnorm import get_norm_layer
from .dropout import get_dropout_layer
from .nets import build_residual

ROLES = {
    "linear": "linear",
    "conv": "conv",
    "dropout": "drop",
    "batchnorm": "bn",
    "activation": "act",
}


def pool_kernel(h: int, w: int) -> tuple[int, int]:
    """2×2 pooling, except along a side already down to 1 (e.g. a 1×40 signal)."""
    return (2 if h >= 2 else 1, 2 if w >= 2 else 1)


class Block(nn.Module):
    """One hidden block: its layers in the configured order (children named by role)."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for role, layer in layers:
            self.add_module(role, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


class Net(nn.Module):
    """Hidden blocks, then [global average pool for CNNs] → head_drop → classifier."""

    def __init__(
        self, blocks: list[Block], head_drop: nn.Module | None, classifier: nn.Linear, arch: str
    ) -> None:
        super().__init__()
        self.arch = arch
        self.blocks = nn.ModuleList(blocks)
        if head_drop is not None:
            self.head_drop = head_drop
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if self.arch == "mlp" else x  # (B, D) | (B, C, H, W)
        for block in self.blocks:
            x = block(x)
        if self.arch == "cnn":
            x = x.mean(dim=(2, 3))  # global average pool: (B, C)
        if hasattr(self, "head_drop"):
            x = self.head_drop(x)
        return self.classifier(x)


def _layer(kind: str, cfg: ModelConfig, arch: str, c_in: int, c_out: int) -> nn.Module:
    """One layer of a block; c_in is the channel count at its position in the block."""
    if kind == "linear":
        return nn.Linear(c_in, c_out)
    if kind == "conv":
        return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
    if kind == "dropout":
        d = cfg.dropout
        return get_dropout_layer(d.kind, d.rate, d.mask)
    if kind == "batchnorm":
        b = cfg.batchnorm
        return get_norm_layer(
            b.impl,
            1 if arch == "mlp" else 2,
            c_in,
            eps=b.eps,
            momentum=b.momentum,
            affine=b.affine,
            gamma_init=b.gamma_init,
            beta_init=b.beta_init,
        )
    return ACTIVATIONS[cfg.activation]()


def _block(
    cfg: ModelConfig, arch: str, c_in: int, c_out: int, hw: tuple[int, int]
) -> tuple[Block, tuple[int, int]]:
    layers, c = [], c_in
    for kind in cfg.block:
        layers.append((ROLES[kind], _layer(kind, cfg, arch, c, c_out)))
        c = c_out if kind in ("linear", "conv") else c
    if arch == "cnn":
        k = pool_kernel(*hw)
        pool = nn.MaxPool2d(k) if cfg.pooling == "max" else nn.AvgPool2d(k)
        layers.append(("pool", pool))
        hw = (hw[0] // k[0], hw[1] // k[1])
    return Block(layers), hw


def build_model(model_cfg: ModelConfig, in_shape: tuple[int, ...], n_classes: int) -> Net:
    """Build the network of `model_cfg` for inputs of in_shape (C, H, W)."""
    arch = model_cfg.arch
    if arch in RESIDUAL_ARCHS:  # resnet / wrn / densenet: built from their spec (nets.py)
        return build_residual(model_cfg, in_shape, n_classes)
    if arch not in ("mlp", "cnn"):
        raise ValueError(f"model.arch must be one of {ARCHS}, got {arch!r}")
    c = math.prod(in_shape) if arch == "mlp" else in_shape[0]
    hw = tuple(in_shape[1:3]) if arch == "cnn" else (1, 1)
    blocks = []
    for width in model_cfg.widths:
        block, hw = _block(model_cfg, arch, c, width, hw)
        blocks.append(block)
        c = width
    head = model_cfg.head_dropout
    head_drop = None
    if head is not None:
        d = model_cfg.dropout
        head_drop = get_dropout_layer(d.kind, head, d.mask)
    return Net(blocks, head_drop, nn.Linear(c, n_classes), arch)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters of a built model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
