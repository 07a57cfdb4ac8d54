"""Gradient noise probe (`probe.grad_noise`, docs/science.md §6): the cosine between one fresh
mini-batch gradient and a reference gradient on a larger fixed set of training samples,
both at the current weights, in train mode with dropout active.

The reference is the mean of the mini-batch gradients over K fixed chunks of batch_size
samples (each chunk normalised by its own batch statistics, as in training), i.e. an
estimate of the expected mini-batch gradient; a noisier gradient has a lower cosine to it.
Nothing about training changes: gradients come from torch.autograd.grad (param.grad and the
optimizer are untouched), BN running statistics are not recorded (so the BNProbe's window is
unaffected), and the global RNG is forked (the dropout masks drawn here do not shift the
training's random stream).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import untracked_bn

# The reference gradient averages up to this many batches (4096 samples at 128).
REFERENCE_CHUNKS = 32


def _flat_grad(
    model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def grad_cosine(
    model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, batch: int, step: int
) -> float:
    """Cosine between a random mini-batch gradient and the mean gradient over K fixed batches."""
    params = [p for p in model.parameters() if p.requires_grad]
    devices = [x_train.device] if x_train.device.type == "cuda" else []
    n_ref = min(len(x_train) // batch, REFERENCE_CHUNKS) * batch
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=devices), untracked_bn(model):
            torch.manual_seed(step)  # reproducible masks and batch per probe step
            ref = sum(
                _flat_grad(model, params, x_train[i : i + batch], y_train[i : i + batch])
                for i in range(0, n_ref, batch)
            ) / max(n_ref // batch, 1)
            idx = torch.randperm(len(x_train), device=x_train.device)[:batch]
            g = _flat_grad(model, params, x_train[idx], y_train[idx])
        return F.cosine_similarity(g, ref, dim=0).item()  # CPU-GPU sync point
    finally:
        model.train(was_training)
