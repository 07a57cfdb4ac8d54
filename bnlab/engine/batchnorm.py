"""Batch Normalization with the matrix-form backward (docs/science.md §4), plus the norm factory.

Ioffe & Szegedy, "Batch Normalization", ICML 2015 (arXiv 1502.03167). The classes subclass
torch's BatchNorm1d/2d, so parameters, buffers and state_dict keys are the same and the
running-stat update follows torch exactly: the *unbiased* batch variance enters
running_var, momentum=None is a cumulative average over num_batches_tracked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0,) if x.dim() == 2 else (0,) + tuple(range(2, x.dim()))  # all but channels


def _channel_view(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)  # (1, C) or (1, C, 1, 1)


class MatrixBatchNormFn(Function):
    """y = γ·x̂ + β with x̂ = (x − μ_B)/σ, σ = sqrt(var_B + eps); returns (y, μ_B, var_B)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        dims, view = _reduce_dims(x), _channel_view(x)
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)  # (C,), biased: what training uses
        sigma = (var + eps).sqrt()
        xhat = (x - mean.view(view)) / sigma.view(view)
        y = xhat if weight is None else xhat * weight.view(view) + bias.view(view)
        ctx.save_for_backward(xhat, sigma, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        xhat, sigma, weight = ctx.saved_tensors
        dims, view = _reduce_dims(dy), _channel_view(dy)
        n = dy.numel() // dy.shape[1]  # samples per channel (N, or N·H·W)
        sum_dy = dy.sum(dims)  # dβ = Σ dy
        sum_dy_xhat = (dy * xhat).sum(dims)  # dγ = Σ dy·x̂
        gamma = torch.ones_like(sigma) if weight is None else weight
        # dx = (γ / (N σ)) · (N·dy − Σ dy − x̂ · Σ(dy·x̂))   (docs/science.md §4)
        dx = (gamma / (n * sigma)).view(view) * (
            n * dy - sum_dy.view(view) - xhat * sum_dy_xhat.view(view)
        )
        dgamma = sum_dy_xhat if weight is not None and ctx.needs_input_grad[1] else None
        dbeta = sum_dy if weight is not None and ctx.needs_input_grad[2] else None
        return dx, dgamma, dbeta, None


def matrix_batch_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """Train-mode BN with the matrix-form backward (functional form, for gradcheck)."""
    return MatrixBatchNormFn.apply(x, weight, bias, eps)[0]


class _MatrixBatchNorm:
    """Mixin: train mode goes through MatrixBatchNormFn; eval mode is torch's own kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if x.numel() // x.shape[1] < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}"
            )
        y, mean, var = MatrixBatchNormFn.apply(x, self.weight, self.bias, self.eps)
        self._update_running(mean, var, x.numel() // x.shape[1])
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """Same rule as torch: running ← (1 − f)·running + f·batch, unbiased variance."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        # momentum None → f = 1/t: an equal-weight (cumulative) average over t batches
        f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1.0 - f).add_(mean, alpha=f)
        self.running_var.mul_(1.0 - f).add_(var * (n / (n - 1)), alpha=f)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", impl=matrix"


class MatrixBatchNorm1d(_MatrixBatchNorm, nn.BatchNorm1d):
    """BatchNorm1d whose backward is the matrix form of docs/science.md §4."""


class MatrixBatchNorm2d(_MatrixBatchNorm, nn.BatchNorm2d):
    """BatchNorm2d whose backward is the matrix form of docs/science.md §4."""


_NORMS = {
    ("torch", 1): nn.BatchNorm1d,
    ("torch", 2): nn.BatchNorm2d,
    ("matrix", 1): MatrixBatchNorm1d,
    ("matrix", 2): MatrixBatchNorm2d,
}


def get_norm_layer(
    impl: str,
    dim: int,
    num_features: int,
    *,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    gamma_init: float = 1.0,
    beta_init: float = 0.0,
) -> nn.modules.batchnorm._BatchNorm:
    """Config → BN module (impl 'torch' | 'matrix', dim 1 for MLPs, 2 for CNNs)."""
    if (impl, dim) not in _NORMS:
        raise ValueError(
            f"model.batchnorm.impl must be 'torch' or 'matrix' (dim 1|2), got {impl!r}, {dim}"
        )
    layer = _NORMS[impl, dim](num_features, eps=eps, momentum=momentum, affine=affine)
    if affine:
        with torch.no_grad():
            layer.weight.fill_(gamma_init)
            layer.bias.fill_(beta_init)
    return layer
