"""Evaluation modes, each a @torch.no_grad() function that sets the mode and restores it.

- eval mode: BN on running statistics, dropout off (what inference does).
- train mode ("forgot model.eval()"): what `model.train()` does at test time, dropout on and
  BN normalising each test batch by its own statistics; and BN-only train mode (dropout off),
  a separately named measure of BN's part. The model's running statistics are not recorded
  (track_running_stats off), so evaluation never changes the trained model. A test batch of
  one is undefined for BN in train mode (one value per channel): reported as None.
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
    # Module.__setattr__ per module, a visible cost at every probe. (Nothing here overrides
    # train().)
    for m in modules:
        object.__setattr__(m, "training", False)
    for bn in bns:
        object.__setattr__(bn, "training", bn_train)
        object.__setattr__(bn, "track_running_stats", bn_track and bn.track_running_stats)
    try:
        yield model
    finally:
        for m, training in zip(modules, saved, strict=True):
            object.__setattr__(m, "training", training)
        for bn, track in zip(bns, tracked, strict=True):
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


# Why a test batch of one has no train-mode accuracy (the summary stores it beside a null).
UNDEFINED_AT_ONE = (
    "undefined: BatchNorm in train mode normalises by the batch's own statistics, and a batch "
    "of one sample has one value per channel (PyTorch refuses it)"
)


@contextmanager
def train_mode(model: nn.Module, *, dropout: bool, fast_masks: bool = False) -> Iterator[nn.Module]:
    """BN in train mode without recording its batches; dropout on too if `dropout` (what
    `model.train()` at test time does), else every other module in eval mode. fast_masks:
    bnlab's dropout layers draw bernoulli masks by the faster route (dropout.noise)."""
    modules, bns = _tree(model)
    saved, tracked = [m.training for m in modules], [bn.track_running_stats for bn in bns]
    drops = [m for m in modules if isinstance(m, Dropout)] if fast_masks else []
    for m in drops:
        object.__setattr__(m, "fast_masks", True)
    for m in modules:
        object.__setattr__(m, "training", dropout)
    for bn in bns:
        object.__setattr__(bn, "training", True)
        object.__setattr__(bn, "track_running_stats", False)
    try:
        yield model
    finally:
        for m, training in zip(modules, saved, strict=True):
            object.__setattr__(m, "training", training)
        for bn, track in zip(bns, tracked, strict=True):
            object.__setattr__(bn, "track_running_stats", track)
        for m in drops:
            object.__delattr__(m, "fast_masks")  # back to the class default


def _usable(n: int, batch_size: int) -> int:
    """Samples evaluated in batches of batch_size: a trailing batch of one is left out (BN in
    train mode cannot normalise a single value per channel)."""
    return n - 1 if batch_size > 1 and n % batch_size == 1 and n > 1 else n


@contextmanager
def _kept_rng(device: torch.device, seed: int | None) -> Iterator[None]:
    """Random draws inside come from `seed` (or, with None, from the current state) and the
    caller's random stream is restored afterwards. Saving and restoring the CPU state costs
    ~1 µs; torch.random.fork_rng plus manual_seed ~90 µs, a visible share of a probe."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        if seed is not None:
            torch.manual_seed(seed)
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


@torch.no_grad()
def train_mode_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int,
    *,
    dropout: bool,
    seed: int | None = 0,
    fast_masks: bool = False,
) -> torch.Tensor:
    """Logits with BN on each batch of batch_size's own statistics ("forgot model.eval()"),
    dropout on as well if `dropout`. Running statistics are left exactly as they were; the
    dropout draws come from `seed` (None: from the current random state) and the caller's
    random stream is restored, so training is untouched and the result repeats. A trailing
    batch of one is left out (_usable), and a batch size of 1 raises PyTorch's ValueError for
    BatchNorm1d. fast_masks: see train_mode (the probe's per-step series uses it)."""
    x = x[: _usable(len(x), batch_size)]
    kept = _kept_rng(x.device, seed if dropout else None)
    with kept, train_mode(model, dropout=dropout, fast_masks=fast_masks):
        return cat_chunks([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def train_bn_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """train_mode_logits with dropout off: only BN's behaviour (the BN-only measure)."""
    return train_mode_logits(model, x, batch_size, dropout=False)


def draws_matter(model: nn.Module) -> bool:
    """Whether train mode at test time depends on a random draw: some dropout with a nonzero
    rate (bnlab's layers or torch's). Without one, every draw gives the same logits."""
    return any(
        (isinstance(m, Dropout) and m.rate > 0)
        or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
        for m in _tree(model)[0]
    )


@torch.no_grad()
def evaluate_train_mode_draws(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    max_samples: int | None = None,
    *,
    dropout: bool = True,
    draws: int = 1,
) -> torch.Tensor | None:
    """Accuracy in train mode at test batch size batch_size, one value per dropout draw: a 1-d
    device tensor of `draws` accuracies, the d-th drawn from seed d (so draw 0 is the one-draw
    value). Real `model.train()` (dropout on) by default, BN-only with dropout=False (nothing
    random: one value). None where BN in train mode is undefined (a batch of one value per
    channel; UNDEFINED_AT_ONE says why).

    max_samples caps the work at tiny batch sizes (batch size 2 means one forward per pair).
    """
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    if not (dropout and draws_matter(model)):
        draws = 1
    accs = []
    for seed in range(draws):
        try:
            logits = train_mode_logits(model, x, batch_size, dropout=dropout, seed=seed)
        except ValueError as e:
            if "more than 1 value per channel" in str(e):
                return None
            raise
        accs.append((logits.argmax(1) == y[: len(logits)]).float().mean())
    return torch.stack(accs)


def evaluate_train_mode(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    max_samples: int | None = None,
    *,
    dropout: bool = True,
) -> torch.Tensor | None:
    """Accuracy in train mode from the single draw seeded 0, as a 0-d device tensor (None where
    undefined); evaluate_train_mode_draws averages several."""
    accs = evaluate_train_mode_draws(model, x, y, batch_size, max_samples, dropout=dropout)
    return None if accs is None else accs[0]


def mean_and_se(accs: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mean, standard error of the mean) over draws; the error is None for a single draw."""
    if accs is None:
        return None, None
    if len(accs) < 2:
        return accs.mean(), None
    return accs.mean(), accs.std() / len(accs) ** 0.5  # n − 1 in the sd


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
    train_mode_draws: int = 1,
) -> dict:
    """The summary's accuracies: eval mode; per test batch size real train mode (dropout on,
    `test_acc_train_mode`: the mean over `train_mode_draws` dropout draws, with its standard
    error in `test_acc_train_mode_se`) and BN-only train mode (`test_acc_train_bn`, nothing
    random), None where undefined; recalibrated. `test_acc_train_mode_draws` is the number of
    draws made: 1 when no dropout is active (every draw would be the same)."""
    _, acc = evaluate(model, data.x_test, data.y_test)
    out: dict = {"test_acc_eval": acc}
    draws = train_mode_draws if draws_matter(model) else 1
    out["test_acc_train_mode_draws"] = draws
    out["test_acc_train_mode"], out["test_acc_train_mode_se"] = {}, {}
    out["test_acc_train_bn"] = {}
    for b in train_mode_sizes:
        cap = max_train_mode_samples if b < 64 else None
        mean, se = mean_and_se(
            evaluate_train_mode_draws(
                model, data.x_test, data.y_test, b, cap, dropout=True, draws=draws
            )
        )
        out["test_acc_train_mode"][str(b)], out["test_acc_train_mode_se"][str(b)] = mean, se
        out["test_acc_train_bn"][str(b)] = evaluate_train_mode(
            model, data.x_test, data.y_test, b, cap, dropout=False
        )
    if recalibrate_samples:
        recal = recalibrate(model, data.x_train, batch_size, recalibrate_samples)
        out["test_acc_recalibrated"] = evaluate(recal, data.x_test, data.y_test)[1]
    return out
