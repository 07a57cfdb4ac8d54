"""The activation modules by registry name (ACTIVATIONS in bnlab/core/registry.py)."""

from __future__ import annotations

import torch
from torch import nn


class Gaussian(nn.Module):
    """exp(−x²): a bump nonlinearity that saturates on both sides."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x * x)


ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gaussian": Gaussian,
    "identity": nn.Identity,
}
