"""BNProbe: train-time vs inference-time statistics of every BN layer (SCIENCE.md §1).

Variance shift: Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch
Normalization by Variance Shift", CVPR 2019 (arXiv 1801.05134).

Cost in the hot loop: one forward hook on the model root that adds every BN running
buffer into an on-device sum (one `_foreach_add_`, O(channels), no host sync). The
batch statistics are recovered from BN's own update at probe time: with
running_t = (1 − m)·running_{t−1} + m·b_t, the sum of b_t over K steps is
S + (1 − m)/m · (running_K − running_0) with S = Σ running_t; for momentum=None
(f = 1/t) it telescopes to t_K·running_K − t_0·running_0. This costs ~nothing, where a
per-step var_mean of the BN input costs 20-45 % on CPU (issue 2). The eval-mode pass uses
temporary pre-hooks that are removed when it ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .evaluate import EVAL_CHUNK, mode


@dataclass
class Unit:
    """One reported layer: a hidden block's BN (or its weight layer if it has no BN)."""

    name: str
    bn: _BatchNorm | None
    weight: torch.nn.Parameter | None  # the block's linear/conv weight, for grad_norm


def units(model: nn.Module) -> list[Unit]:
    """The layers a probe reports: one per hidden block of a Net, else one per BN layer."""
    if hasattr(model, "blocks"):
        out = []
        for i, block in enumerate(model.blocks):
            bn = getattr(block, "bn", None)
            role = "linear" if hasattr(block, "linear") else "conv"
            out.append(
                Unit(
                    f"blocks.{i}.{'bn' if bn is not None else role}",
                    bn,
                    getattr(block, role).weight,
                )
            )
        return out
    return [Unit(n, m, None) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0,) if x.dim() == 2 else (0,) + tuple(range(2, x.dim()))


@torch.no_grad()
def eval_pass(
    model: nn.Module, x: torch.Tensor, bns: list[_BatchNorm], batch_size: int = EVAL_CHUNK
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, int]]]:
    """Eval-mode forward of x (every dropout off, BN on running stats); returns the logits and,
    per BN, (mean, biased var, count) per channel of what the BN layer receives (float64)."""
    acc: dict[int, tuple[torch.Tensor, int]] = {}  # id(bn) → ((Σh, Σh²) per channel, count)

    def pre_hook(module: nn.Module, args: tuple) -> None:
        # Sums, not var_mean: on CPU var_mean over the batch is ~20x slower than two sums.
        # Centering on running_mean (fixed during an eval pass) avoids the cancellation of
        # E[x²] − E[x]² in float32 when the mean is large against the spread.
        shift = module.running_mean.view((1, -1) + (1,) * (args[0].dim() - 2))
        h = args[0] - shift  # (B, C[, H, W])
        d = _dims(h)
        sums, n = torch.stack([h.sum(d), (h * h).sum(d)]).double(), h.numel() // h.shape[1]
        prev = acc.get(id(module))
        acc[id(module)] = (sums, n) if prev is None else (prev[0] + sums, prev[1] + n)

    handles = [bn.register_forward_pre_hook(pre_hook) for bn in bns]
    try:
        with mode(model, bn_train=False):
            logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        for h in handles:
            h.remove()
    out = []
    for bn in bns:
        sums, n = acc[id(bn)]
        centered_mean, centered_m2 = (sums / n).unbind()
        var = (centered_m2 - centered_mean**2).clamp_min(0.0)
        out.append((bn.running_mean.double() + centered_mean, var, n))
    return logits, out


def predicted_shift(kind: str, rate: float, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """SCIENCE.md §2 train var / eval var per channel for Dropout(kind, rate) right before BN,
    from the dropout input's eval-mode mean μ and variance v (m2 = v + μ²)."""
    m2, mu2 = var + mean * mean, mean * mean
    train_m2 = m2 * (1 + rate * rate / 3) if kind == "uniform" else m2 / (1 - rate)
    return (train_m2 - mu2) / var.clamp_min(1e-12)


def shift_per_channel(
    eval_var: torch.Tensor, running_var: torch.Tensor, eps: float
) -> torch.Tensor:
    """max(eval/running, running/eval) per channel (≥ 1); eps (BN's own) guards dead channels."""
    ratio = (eval_var + eps) / (running_var + eps)
    return torch.maximum(ratio, 1.0 / ratio)


class BNProbe:
    """Measures every BN layer: attach(model) before training, record(...) at each probe.

    >>> with BNProbe(batch_n) as probe: ...  # or probe.attach(model) / probe.detach()
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.units: list[Unit] = []
        self.steps = 0  # training steps in the current window (python int: no sync)
        self.model = None
        if model is not None:
            self.attach(model)

    # -------------------------------------------------------------- hooks
    def attach(self, model: nn.Module) -> BNProbe:
        """Hook the model root; a second attach first detaches."""
        self.detach()
        self.model, self.units = model, units(model)
        self.bns = [u.bn for u in self.units if u.bn is not None]
        self.handles.append(model.register_forward_hook(self._after_forward))
        self.reset_window()
        return self

    def detach(self) -> None:
        """Remove every hook this probe added (idempotent)."""
        while self.handles:
            self.handles.pop().remove()

    def __enter__(self) -> BNProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.units]

    def _buffers(self) -> list[torch.Tensor]:
        return [b for bn in self.bns for b in (bn.running_mean, bn.running_var)]

    def _after_forward(self, module: nn.Module, args: tuple, out: Any) -> None:
        # Only training steps: every evaluation runs under no_grad (and often in train mode).
        if module.training and torch.is_grad_enabled() and self.bns:
            torch._foreach_add_(self.sums, self.bufs)  # S += running_t, on device
        if module.training and torch.is_grad_enabled():
            self.steps += 1

    # -------------------------------------------------------------- windows
    def reset_window(self) -> None:
        """Start averaging train-mode batch statistics afresh (after each probe)."""
        # BN updates its buffers in place, so this list stays valid while the window is open
        # (and spares the hot hook six Module.__getattr__ calls per step).
        self.bufs = bufs = self._buffers()
        self.sums = [torch.zeros_like(b) for b in bufs]
        self.start = [b.clone() for b in bufs]
        self.start_t = [bn.num_batches_tracked.clone() for bn in self.bns]
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": self.sums,
            "start": self.start,
            "start_t": self.start_t,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = [t.clone() for t in state["sums"]]
        self.start = [t.clone() for t in state["start"]]
        self.start_t = [t.clone() for t in state["start_t"]]
        self.steps = int(state["steps"])

    def train_stats(self, ns: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per BN, the batch mean and biased batch variance per channel averaged over the window.

        ns: per BN, values per channel in one training batch (batch size × H × W).
        """
        out, k = [], max(self.steps, 1)
        for i, (bn, n) in enumerate(zip(self.bns, ns)):
            pair = []
            for j, rk in enumerate((bn.running_mean, bn.running_var)):
                s, r0 = self.sums[2 * i + j], self.start[2 * i + j]
                if bn.momentum is None:  # f = 1/t: Σ b_t = t_K·R_K − t_0·R_0 (telescoping)
                    total = bn.num_batches_tracked * rk - self.start_t[i] * r0
                else:  # Σ b_t = S + (1 − m)/m · (R_K − R_0)
                    total = torch.add(s, rk - r0, alpha=(1.0 - bn.momentum) / bn.momentum)
                pair.append(total.div_(k))
            out.append((pair[0], pair[1].mul_((n - 1) / max(n, 2))))  # running_var is unbiased → biased
        return out

    # -------------------------------------------------------------- measuring
    @torch.no_grad()
    def record(
        self, x_eval: torch.Tensor, train_batch: int
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Measure every layer now (eval pass over x_eval); returns (eval logits, layer dicts).

        train_batch: samples per training batch. Starts a new window.
        """
        logits, sums = eval_pass(self.model, x_eval, self.bns)
        ns = [train_batch * (int(s[2]) // len(x_eval)) for s in sums]  # batch × H × W
        per_bn, self.last_shift_per_channel, self.last_eval = [], {}, {}
        bn_units = [u for u in self.units if u.bn is not None]
        for unit, bn, (tmean, tvar), (emean, evar, _) in zip(
            bn_units, self.bns, self.train_stats(ns), sums
        ):
            evar = evar.float()
            shift = shift_per_channel(evar, bn.running_var, bn.eps)
            per_bn.append(
                torch.stack(
                    [tmean, tvar, bn.running_mean, bn.running_var, emean.float(), evar, shift]
                ).mean(1)
            )  # (7,): channel means
            self.last_shift_per_channel[unit.name] = shift
            self.last_eval[unit.name] = (emean, evar)  # per channel, what inference feeds the layer
        grads = [
            u.weight.grad.norm()
            if u.weight is not None and u.weight.grad is not None
            else torch.tensor(float("nan"), device=logits.device)
            for u in self.units
        ]
        stats = torch.stack(per_bn).tolist() if per_bn else []  # CPU-GPU sync point
        grad_list = torch.stack(grads).tolist() if grads else []  # CPU-GPU sync point
        self.reset_window()
        return logits, self._rows(stats, grad_list)

    def _rows(self, stats: list[list[float]], grads: list[float]) -> list[dict[str, Any]]:
        keys = (
            "train_mean",
            "train_var",
            "running_mean",
            "running_var",
            "eval_mean",
            "eval_var",
            "shift",
        )
        rows, it = [], iter(stats)
        for i, u in enumerate(self.units):
            vals = next(it) if u.bn is not None else [None] * len(keys)
            row = {"index": i, "name": u.name, **{k: _finite(v) for k, v in zip(keys, vals)}}
            row["grad_norm"] = _finite(grads[i])
            rows.append(row)
        return rows


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None
