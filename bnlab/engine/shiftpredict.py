"""Predicted variance shift for dropout → conv → (residual sum) → BN in the residual nets.

docs/science.md §2 ("Dropout → conv → residual sum → BN"). In a pre-activation unit with
`model.dropout_at = "before_conv"` the dropout sits before a conv whose output either goes
straight into a BN of the same unit (bottleneck: drop2 → conv2 → bn3) or is the unit's
branch output, added to the shortcut; the BN that then sees the dropout's noise is the
first BN of the next unit (`bn1`) or the head's BN. With y = x·g (g independent of
everything else, E g = 1, Var g = σ², one g per value: `dropout.mask = "per_sample"`), and
h = conv(y) (+ s, the shortcut, which carries no noise of this dropout):

    h = conv(x) + s + conv(x·(g − 1)),   E[g − 1 | x, s] = 0,

so the cross term Cov(conv(x) + s, conv(x·(g − 1))) vanishes without any independence of
branch and shortcut (only g's independence is used), and for output channel c

    Var_train(h_c) = Var_eval(h_c) + σ² · E_{n,p}[ Σ_{i,k} w_{c,i,k}² · x_{n,i,p+k}² ]

where the expectation runs over samples n and output positions p, taps falling on the zero
padding contributing nothing. The bracket is exactly conv(x², w²) with the conv's stride and
padding, averaged per channel; computing it that way keeps the border exact (ignoring the
padding overstates the extra variance by ~16 % for a 3×3 conv on an 8×8 map).

The predicted shift per channel is 1 + that extra / Var_eval(h_c) (Var_eval measured by the
probe at the BN's input); the per-layer value is the channel mean, like `shift`. It is this
dropout's own contribution: the measured shift matches it at the first BN after the first
dropout; deeper BNs also carry the noise of the dropouts upstream (through the shortcuts),
which this term leaves out.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.core.registry import noise_moments

from .evaluate import predict_logits


def dropout_conv_targets(spec: Any) -> dict[str, tuple[str, str]]:
    """{BN name: (dropout name, conv name)} for every dropout → conv whose output reaches a
    BN with nothing but (at most) a residual sum in between; preact units only (in a dense
    unit the conv's output is concatenated with channels that the dropout never touched)."""
    out: dict[str, tuple[str, str]] = {}
    units = list(spec.units)
    for ui, unit in enumerate(units):
        if unit.kind != "preact":
            continue
        ops = unit.ops
        for i in range(len(ops) - 1):
            drop, conv = ops[i], ops[i + 1]
            if drop.kind != "drop" or conv.kind != "conv":
                continue
            if i + 2 < len(ops):  # inside the unit: the conv must feed a BN directly
                if ops[i + 2].kind == "bn":
                    out[ops[i + 2].name] = (drop.name, conv.name)
                continue
            # the unit's last op: its sum (branch + shortcut) is the next unit's input
            nxt = units[ui + 1] if ui + 1 < len(units) else None
            if nxt is not None and nxt.kind in ("preact", "head") and nxt.ops[0].kind == "bn":
                out[nxt.ops[0].name] = (drop.name, conv.name)
    return out


@torch.no_grad()
def extra_variance(
    model: nn.Module, x: torch.Tensor, convs: dict[str, nn.Conv2d], noise_var: float
) -> dict[str, torch.Tensor]:
    """σ² · E_{n,p}[conv(x², w²)] per output channel (float64) for each named conv, with x the
    conv's eval-mode input (the dropout is the identity in eval mode) over an eval pass of x."""
    sums: dict[str, list] = {}

    def hook(name: str, conv: nn.Conv2d):
        def pre(_m: nn.Module, args: tuple) -> None:
            a = args[0]
            q = F.conv2d(a * a, conv.weight * conv.weight, None, conv.stride, conv.padding)
            s = sums.setdefault(name, [0.0, 0])
            s[0] = s[0] + q.double().sum((0, 2, 3))
            s[1] += q.numel() // q.shape[1]

        return pre

    handles = [c.register_forward_pre_hook(hook(n, c)) for n, c in convs.items()]
    try:
        predict_logits(model, x)  # eval mode
    finally:
        for h in handles:
            h.remove()
    return {n: noise_var * s[0] / s[1] for n, s in sums.items()}


def residual_predictions(
    model: nn.Module,
    x: torch.Tensor,
    dropout: Any,
    last_eval: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    per_channel: bool = False,
) -> dict[str, Any]:
    """{BN name: predicted shift (channel mean)} for a residual net's dropout → conv → BN paths
    (module docstring); {} when there are none or the mask is per batch (one g per channel
    for the whole batch moves the batch's mean and scale instead: not this form).

    dropout: the ModelConfig's dropout (kind, rate, mask); last_eval: the probe's eval-mode
    (mean, variance) per BN input. per_channel: return each BN's channel vector instead."""
    spec = getattr(model, "spec", None)
    if spec is None or getattr(dropout, "mask", "per_sample") != "per_sample":
        return {}
    targets = {k: v for k, v in dropout_conv_targets(spec).items() if k in last_eval}
    if not targets:
        return {}
    convs = {conv: model.get_submodule(conv) for _drop, conv in targets.values()}
    extra = extra_variance(model, x, convs, noise_moments(dropout.kind, dropout.rate)[1])
    out: dict[str, Any] = {}
    for bn, (_drop, conv) in targets.items():
        ratio = 1 + extra[conv] / last_eval[bn][1].double().clamp_min(1e-12)
        out[bn] = ratio if per_channel else ratio.mean().item()
    return out
