"""Dropout kinds as a functional form plus thin modules (timm drop.py style).

- bernoulli: inverted dropout, y = x·m/q, m ~ Bernoulli(q) (Srivastava et al., JMLR 2014).
- gaussian: multiplicative noise y = x·g, g ~ N(1, r/q) — same second moment as bernoulli.
- uniform: Uout (Li et al., CVPR 2019, arXiv 1801.05134 §5), y = x + x·u, u ~ U(−β, β), β = rate.

Masks are `per_sample` (one draw per element, what frameworks do) or `per_batch` (one draw
per feature/channel, shape (1, C[, 1, 1]), shared by the whole batch; docs/science.md §6).
Every kind is the identity in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnlab.core.registry import DROPOUT_KIND_NAMES, MASK_KINDS, check_rate


def mask_shape(x: torch.Tensor, mask: str) -> tuple[int, ...]:
    """Shape of the noise tensor: the input's, or (1, C, 1, ...) for a per-batch mask."""
    if mask == "per_sample":
        return tuple(x.shape)
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def noise(x: torch.Tensor, kind: str, rate: float, mask: str, fast: bool = False) -> torch.Tensor:
    """The multiplicative factor of a train-mode dropout, broadcastable to x.

    fast: bernoulli masks as rand < q, the same Bernoulli(q) distribution from another random
    stream, ~2.6x faster on CPU than bernoulli_ (used by the probe's train-mode pass, not by
    training, whose random stream stays what it always was)."""
    shape, q = mask_shape(x, mask), 1.0 - rate
    if kind == "bernoulli":
        if fast:
            keep = torch.rand(shape, device=x.device) < q
            return keep.to(x.dtype).div_(q)
        return torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(q).div_(q)
    if kind == "gaussian":
        # g ~ N(1, r/q): E[g] = 1, E[g²] = 1/q, like inverted bernoulli (docs/science.md §2)
        return (
            torch.randn(shape, device=x.device, dtype=x.dtype).mul_(math.sqrt(rate / q)).add_(1.0)
        )
    if kind == "uniform":
        # 1 + u, u ~ U(−β, β): E[(1+u)²] = 1 + β²/3
        return torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(-rate, rate).add_(1.0)
    raise ValueError(f"model.dropout.kind must be one of {DROPOUT_KIND_NAMES}, got {kind!r}")


def dropout(
    x: torch.Tensor,
    kind: str = "bernoulli",
    rate: float = 0.5,
    mask: str = "per_sample",
    training: bool = True,
    fast: bool = False,
) -> torch.Tensor:
    """Apply dropout of `kind` at `rate` (the drop probability; β for uniform)."""
    if not training or rate == 0.0:
        return x
    if fast and kind == "bernoulli" and mask == "per_sample" and x.dtype == torch.float32:
        # The probe's pass: the same draws and values as noise(fast=True) times x, in one
        # buffer (rand, then 0/1 in place, then 1/q and x in place): no bool mask, no dtype
        # copy, one allocation instead of three; ~30 µs less per 128x256 layer on CPU.
        q = 1.0 - rate
        keep = torch.rand(x.shape, device=x.device, dtype=x.dtype)
        return keep.lt_(q).div_(q).mul_(x)
    return x * noise(x, kind, rate, mask, fast)


class Dropout(nn.Module):
    """A dropout layer of any kind; identity in eval mode."""

    kind = "bernoulli"
    fast_masks = False  # set on an instance for a pass that may use noise(..., fast=True)

    def __init__(self, rate: float = 0.5, mask: str = "per_sample") -> None:
        super().__init__()
        check_rate(self.kind, rate)  # per kind: Uout's beta may exceed 1 (equal noise)
        if mask not in MASK_KINDS:
            raise ValueError(f"model.dropout.mask must be one of {MASK_KINDS}, got {mask!r}")
        self.rate, self.mask = float(rate), mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.kind, self.rate, self.mask, self.training, self.fast_masks)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, mask={self.mask}"


class BernoulliDropout(Dropout):
    kind = "bernoulli"


class GaussianDropout(Dropout):
    kind = "gaussian"


class UniformDropout(Dropout):
    kind = "uniform"


# One module per registry kind (a drift test checks the keys, and the noise moments).
_DROPOUTS = {c.kind: c for c in (BernoulliDropout, GaussianDropout, UniformDropout)}


def get_dropout_layer(kind: str, rate: float, mask: str = "per_sample") -> Dropout:
    """Config string → dropout module (the one place kinds are mapped to classes)."""
    if kind not in _DROPOUTS:
        raise ValueError(f"model.dropout.kind must be one of {DROPOUT_KIND_NAMES}, got {kind!r}")
    return _DROPOUTS[kind](rate, mask)
