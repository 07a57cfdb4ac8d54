"""Evaluation modes, each a @torch.no_grad() function that sets the mode and restores it.

- eval mode: BN on running statistics, dropout off (what inference does).
- train-BN mode ("forgot model.eval()"): BN normalises each test batch by its own
  statistics; dropout stays off so only BN's behaviour is measured. The model's running
  statistics are not recorded (track_running_stats off), so evaluation never changes the
  trained model.
- PreciseBN recalibration (Wu & Johnson 2021, arXiv 2105.07576): on a copy of the model,
  reset BN statistics, cumulative averaging (momentum=None), dropout off, BN in train
  mode, training samples through the net without gradients.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .dropout import Dropout


# Samples per forward in eval passes. On CPU a 512-image CNN forward takes ~40 % longer than
# two of 256 (the activations stop fitting in cache); MLPs are as fast at 256 as at 4096.
EVAL_CHUNK = 256


_TREES: weakref.WeakKeyDictionary[nn.Module, tuple[list[nn.Module], list[_BatchNorm]]] = (
    weakref.WeakKeyDictionary()
)


def _tree(model: nn.Module) -> tuple[list[nn.Module], list[_BatchNorm]]:
    """(every module, the BN layers) of model, listed once per model: walking the tree costs
    ~40 µs at every probe. bnlab never adds modules to a built model."""
    tree = _TREES.get(model)
    if tree is None:
        modules = list(model.modules())
        tree = _TREES[model] = (modules, [m for m in modules if isinstance(m, _BatchNorm)])
    return tree


def _bns(model: nn.Module) -> list[_BatchNorm]:
    return _tree(model)[1]


@contextmanager
def mode(model: nn.Module, *, bn_train: bool, bn_track: bool = True) -> Iterator[nn.Module]:
    """Everything in eval mode except BN (train mode if bn_train); bn_track=False keeps BN in
    train mode from recording its batches. Restores every module's mode on exit."""
    modules, bns = _tree(model)
    saved, tracked = [m.training for m in modules], [bn.track_running_stats for bn in bns]
    # Set the plain attributes directly: model.eval() recurses through Module.train() and
    # Module.__setattr__ per module, a visible cost at every probe. (Nothing here overrides train().)
    for m in modules:
        object.__setattr__(m, "training", False)
    for bn in bns:
        object.__setattr__(bn, "training", bn_train)
        object.__setattr__(bn, "track_running_stats", bn_track and bn.track_running_stats)
    try:
        yield model
    finally:
        for m, training in zip(modules, saved):
            object.__setattr__(m, "training", training)
        for bn, track in zip(bns, tracked):
            object.__setattr__(bn, "track_running_stats", track)


@contextmanager
def untracked_bn(model: nn.Module) -> Iterator[None]:
    """BN in train mode normalises by each batch's statistics without recording them
    (track_running_stats off) until exit: cheaper than saving and restoring every buffer."""
    saved = [(bn, bn.track_running_stats) for bn in _bns(model)]
    for bn, _ in saved:
        bn.track_running_stats = False
    try:
        yield
    finally:
        for bn, tracked in saved:
            bn.track_running_stats = tracked


def cat_chunks(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat, without the copy for a single chunk."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_CHUNK) -> torch.Tensor:
    """Eval-mode logits (BN on running statistics, dropout off)."""
    with mode(model, bn_train=False):
        return cat_chunks([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy) in eval mode, as 0-d device tensors (no host sync)."""
    logits = predict_logits(model, x, batch_size)
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


def _batch_stats_forward(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    # A batch of one: BatchNorm1d refuses it in train mode. Two copies of the sample have
    # exactly its statistics (mean = x, biased var = 0), and with dropout off they stay
    # identical through the net, so every BN1d output collapses to β as SCIENCE.md §3 says.
    if len(xb) == 1:
        return model(torch.cat([xb, xb]))[:1]
    return model(xb)


@torch.no_grad()
def train_bn_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits with BN on each batch of batch_size's own statistics, dropout off ("forgot
    model.eval()"). Running statistics are left exactly as they were."""
    with mode(model, bn_train=True, bn_track=False):
        return cat_chunks(
            [
                _batch_stats_forward(model, x[i : i + batch_size])
                for i in range(0, len(x), batch_size)
            ]
        )


@torch.no_grad()
def evaluate_train_mode(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    max_samples: int | None = None,
) -> torch.Tensor:
    """Accuracy with BN on each test batch's own statistics, as a 0-d device tensor.

    max_samples caps the work at tiny batch sizes (batch size 1 means one forward per sample).
    """
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    return (train_bn_logits(model, x, batch_size).argmax(1) == y).float().mean()


@torch.no_grad()
def recalibrate(
    model: nn.Module, x_train: torch.Tensor, batch_size: int, n_samples: int
) -> nn.Module:
    """PreciseBN on a copy: population statistics over n_samples training samples, dropout off."""
    model = copy.deepcopy(model)
    for bn in _bns(model):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative: every batch weighs the same
    x = x_train[:n_samples]
    with mode(model, bn_train=True):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            if len(xb) >= 2:  # a last batch of one has no variance
                model(xb)
    return model


@torch.no_grad()
def evaluate_mc_dropout(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    passes: int = 10,
    batch_size: int = EVAL_CHUNK,
) -> torch.Tensor:
    """Accuracy of the mean softmax over `passes` forwards with dropout on and BN on running stats
    (MC dropout, Gal & Ghahramani 2016)."""
    saved = [(m, m.training) for m in model.modules()]
    for m, _ in saved:
        object.__setattr__(m, "training", isinstance(m, (Dropout, nn.Dropout)))
    try:
        probs = sum(
            torch.cat(
                [model(x[i : i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)]
            )
            for _ in range(passes)
        )
    finally:
        for m, training in saved:
            object.__setattr__(m, "training", training)
    return (probs.argmax(1) == y).float().mean()


@torch.no_grad()
def summary_accuracies(
    model: nn.Module,
    data,
    *,
    batch_size: int,
    train_mode_sizes: list[int],
    recalibrate_samples: int | None,
    max_train_mode_samples: int = 2000,
) -> dict:
    """The summary's accuracies: eval mode, train-BN mode per test batch size, recalibrated."""
    _, acc = evaluate(model, data.x_test, data.y_test)
    out = {"test_acc_eval": acc}
    out["test_acc_train_mode"] = {
        str(b): evaluate_train_mode(
            model, data.x_test, data.y_test, b, max_train_mode_samples if b < 64 else None
        )
        for b in train_mode_sizes
    }
    if recalibrate_samples:
        recal = recalibrate(model, data.x_train, batch_size, recalibrate_samples)
        out["test_acc_recalibrated"] = evaluate(recal, data.x_test, data.y_test)[1]
    return out
