"""Variance-shift statistics besides bnlab's per-channel `shift` (docs/science.md §1-§2).

- Li et al.'s layer-level statistic: max(real/moving, moving/real) of the layer's variances
  averaged over channels (Li, Chen, Hu, Yang, CVPR 2019, §4 "Statistical Experiments", Fig. 1).
- The signed per-channel log-ratio log(eval_var / running_var) and its quartiles per layer,
  so the direction of a shift shows (negative: BN divides by more variance than inference
  feeds it, the dropout-before-BN case).
- The noise floor: what `shift` and `shift_li` read when there is no shift at all, from the
  number of values behind each variance and the channel's kurtosis (closed form below).
- The predicted shift where dropout feeds a linear or conv layer before BN (through the weights).

All of it works on the probe's flat per-channel vectors: a few tensor operations per probe,
whatever the depth.
"""

from __future__ import annotations

import math

import torch

# |log ratio| beyond this is clamped before the segmented sort (a dead channel's ratio can be
# eps/var, log ≈ -30); the segments are LOG_SPAN apart, so no value crosses into another layer's.
LOG_LIMIT, LOG_SPAN = 60.0, 256.0
QUARTILES = (0.25, 0.5, 0.75)


def fold_mean(s: torch.Tensor) -> torch.Tensor:
    """E[max(R, 1/R)] when log R ~ N(0, s²): E[exp(s·|Z|)] = 2·exp(s²/2)·Φ(s).

    This is what averaging max(r, 1/r) reads with no shift at all: the fold turns noise of
    either sign into a reading above 1 (≈ 1 + 0.8·s for small s).
    """
    return torch.exp(s * s / 2) * (1 + torch.erf(s / math.sqrt(2)))


def log_ratio_var(
    rel_var: torch.Tensor, n_eval: float, n_train: float, ema_weight: torch.Tensor | float
) -> torch.Tensor:
    """Var of log(eval_var_hat / running_var) when both estimate the same variance.

    rel_var = Var(q)/E[q]² for q, one sample's sum of squared deviations over what the
    variance averages (a channel's positions, or a whole layer's channels and positions); for
    one value per sample it is κ − 1 (κ = E[(x−μ)⁴]/v², 3 for a Gaussian, larger for
    ReLU-like activations). Summing within a sample first keeps the correlations between a
    map's positions, or between a layer's channels, which make the estimates noisier.
    - eval_var_hat averages q over n_eval samples: Var(v̂)/v² = rel_var/n_eval;
    - running_var is an exponential moving average of batch variances over n_train samples
      each; for i.i.d. batches Var(EMA) = m/(2 − m) · Var(b) with momentum m, and 1/t for the
      cumulative average of t batches (ema_weight is that factor).
    By the delta method Var(log v̂) ≈ Var(v̂)/v², and the two estimates are independent.
    """
    return rel_var.clamp_min(0) * (1 / n_eval + ema_weight / n_train)


def ema_weight(momentum: float | None, tracked: int) -> float:
    """Var(running estimate) / Var(one batch's estimate) for BN's update rule."""
    if momentum is None:
        return 1 / max(tracked, 1)
    return momentum / (2 - momentum)


def rel_var(sum_q: torch.Tensor, sum_q2: torch.Tensor, n: int) -> torch.Tensor:
    """Var(q)/E[q]² from Σq and Σq² over n samples (0 where q is always 0: a dead channel)."""
    mean_q = sum_q / n
    return torch.where(mean_q > 0, (sum_q2 / n) / mean_q.square().clamp_min(1e-300) - 1, 0.0)


class SegmentQuantiles:
    """Quantiles of each layer's channels from a flat per-channel vector: one sort.

    Each value gets its layer's offset (index × LOG_SPAN), so a single sort keeps every
    layer's channels together and in order; the quantiles are then gathered with linear
    interpolation between order statistics, as torch.quantile(..., interpolation="linear").
    """

    def __init__(self, sizes: tuple[int, ...], device: torch.device, probs=QUARTILES) -> None:
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        lo, hi, frac = [], [], []
        for start, c in zip(starts, sizes, strict=True):
            for p in probs:
                pos = p * (c - 1)
                k = math.floor(pos)
                lo.append(start + k)
                hi.append(start + min(k + 1, c - 1))
                frac.append(pos - k)
        shape = (len(sizes), len(probs))
        self.lo = torch.tensor(lo, dtype=torch.long, device=device).view(shape)
        self.hi = torch.tensor(hi, dtype=torch.long, device=device).view(shape)
        self.frac = torch.tensor(frac, dtype=torch.float64, device=device).view(shape)
        self.offset = (
            torch.arange(len(sizes), dtype=torch.float64)
            .repeat_interleave(torch.tensor(sizes, dtype=torch.long))
            .mul_(LOG_SPAN)
            .to(device)
        )

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """(layers, len(probs)) quantiles of values (flat, one per channel), float64."""
        keyed = values.double().clamp(-LOG_LIMIT, LOG_LIMIT) + self.offset
        s = keyed.sort().values - self.offset  # layer l's channels stay in layer l's slots
        lo, hi = s[self.lo], s[self.hi]
        return lo + (hi - lo) * self.frac


def shift_li(eval_var_mean: float | None, running_var_mean: float | None) -> float | None:
    """Li et al.'s statistic for one layer: max(real/moving, moving/real) of the layer's
    channel-averaged variances (real = eval-mode input variance, moving = running_var)."""
    if not eval_var_mean or not running_var_mean:
        return None
    r = eval_var_mean / running_var_mean
    return max(r, 1 / r)


def predicted_shift_through_weight(
    weight: torch.Tensor, m2_in: torch.Tensor, eval_var_out: torch.Tensor, noise_var: float
) -> torch.Tensor:
    """Predicted running_var / eval_var per output channel for Dropout → Linear/Conv → BN.

    With y_i = x_i·g_i (g_i independent of x and of each other, E g = 1, Var g = σ²):
    Cov(y_i, y_j) = Cov(x_i, x_j) for i ≠ j and Var(y_i) = Var(x_i) + σ²·E[x_i²], so for
    h = Σ_i w_i y_i + b,  Var_train(h) = Var_eval(h) + σ² · Σ_i w_i² E[x_i²]  (exact).
    For a conv, i runs over input channels and kernel taps; E[x_i²] is the channel's second
    moment averaged over positions (the border's zero padding is ignored: exact for a linear
    layer; for a conv the summary uses shiftpredict.extra_variance, border included).

    weight: (out, in) or (out, in, kh, kw); m2_in: (in,) E[x²] of the dropout's input in eval
    mode; eval_var_out: (out,) Var_eval(h), measured at the BN input.
    """
    w2 = weight.detach().double().pow(2)
    w2 = w2.flatten(2).sum(2) if w2.dim() > 2 else w2  # conv: sum over kernel taps
    extra = noise_var * (w2 @ m2_in.double())
    return 1 + extra / eval_var_out.double().clamp_min(1e-12)
