"""BNProbe: train-time vs inference-time statistics of every BN layer (docs/science.md §1).

Variance shift: Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch
Normalization by Variance Shift", CVPR 2019 (arXiv 1801.05134).

Cost in the hot loop: `step()` after each optimizer step adds every BN running buffer
into an on-device sum (one add over a flat tensor of every buffer on CPU, one fused foreach
on CUDA; O(channels), no host sync). The batch
statistics are recovered from BN's own update at probe time: with
running_t = (1 − m)·running_{t−1} + m·b_t, the sum of b_t over K steps is
S + (1 − m)/m · (running_K − running_0) with S = Σ running_t; for momentum=None
(f = 1/t) it telescopes to t_K·running_K − t_0·running_0. This costs ~nothing, where a
per-step var_mean of the BN input costs 20-45 % on CPU (issue 2). step() is called by the
training loop rather than from a forward hook on the model: a hook sends every training
forward through nn.Module's slow call path, measured at 0.5-0.7 % of a small MLP's step, ten
times the cost of the sum itself. The eval-mode pass sets a forward on each BN instance that
takes its input's sums, and removes it when the pass ends.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.core.registry import BN_LAYER_KEYS, LAYER_KEYS, noise_moments

from .evaluate import EVAL_CHUNK, cat_chunks, mode, predict_logits
from .shiftstats import (
    SegmentQuantiles,
    ema_weight,
    fold_mean,
    log_ratio_var,
    rel_var,
    shift_li,
)


@dataclass
class Unit:
    """One reported layer: a hidden block's BN (or its weight layer if it has no BN)."""

    name: str
    bn: _BatchNorm | None
    weight: torch.nn.Parameter | None  # the block's linear/conv weight, for grad_norm


def units(model: nn.Module) -> list[Unit]:
    """The layers a probe reports: one per hidden block of a Net, one per BN of a residual
    net (named by place, `stage2.unit3.bn2`), else one per BN layer."""
    if hasattr(model, "probe_units"):  # bnlab/engine/nets.py: BN and the conv feeding it
        return [Unit(name, bn, weight) for name, bn, weight in model.probe_units()]
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


@functools.lru_cache(maxsize=256)
def _per_channel(
    values: tuple[float, ...], sizes: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return (
        torch.tensor(values, dtype=dtype)
        .repeat_interleave(torch.tensor(sizes, dtype=torch.long))
        .to(device)
    )


def per_channel(
    values: list[float] | list[int],
    sizes: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One value per layer spread over its channels: a flat vector like the probe's state
    (cached: the same layers ask for the same vectors at every probe; don't write to it)."""
    return _per_channel(tuple(values), sizes, torch.device(device), dtype)


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0,) if x.dim() == 2 else (0,) + tuple(range(2, x.dim()))


def _stat_forward(forward: Any, bn: _BatchNorm, slot: int, acc: list, with_spread: bool) -> Any:
    """A BN layer's forward for one eval pass: the sums of what it receives, then its own
    forward. Set as the instance's `forward` for the pass (see eval_pass), not a hook."""
    rm = bn.running_mean  # fixed during an eval pass (BN in eval mode records nothing)

    def stat_forward(x: torch.Tensor) -> torch.Tensor:
        # Sums, not var_mean: on CPU var_mean over the batch is ~20x slower than two sums.
        # Centering on running_mean avoids the cancellation of E[x²] − E[x]² in float32 when
        # the mean is large against the spread.
        h = x - (rm if x.dim() == 2 else rm.view((1, -1) + (1,) * (x.dim() - 2)))
        h2 = h * h
        if h.dim() > 2:  # per sample and channel: sum over positions
            s1, q = h.sum((0, *range(2, h.dim()))), h2.sum(tuple(range(2, h.dim())))
        else:
            s1, q = h.sum(0), h2
        sums = [s1, q.sum(0)]
        if with_spread:  # Σ_i q_ic² per channel; Σ_i (Σ_c q_ic)² per layer (Σ_i Σ_c q_ic is Σ s2)
            q_layer = q.sum(1)
            sums += [(q * q).sum(0), (q_layer @ q_layer).view(1)]
        n = h.numel() // h.shape[1]
        prev = acc[slot]  # a BN met twice in one forward adds up
        if prev is not None:
            sums, n = [a + b for a, b in zip(prev[0], sums, strict=True)], prev[1] + n
        acc[slot] = (sums, n)
        return forward(bn, x)

    return stat_forward


@torch.no_grad()
def eval_pass(
    model: nn.Module,
    x: torch.Tensor,
    bns: list[_BatchNorm],
    batch_size: int = EVAL_CHUNK,
    *,
    with_spread: bool = False,
    running_mean: torch.Tensor | None = None,
) -> tuple[Any, ...]:
    """Eval-mode forward of x (every dropout off, BN on running stats).

    Returns the logits, then the mean and biased variance per channel of what each BN layer
    receives, flat over the channels of `bns` in order (float64), and each BN's count of
    values per channel. with_spread: also (per channel, per layer) Var(q)/E[q]² of each
    sample's sum of squares q around the running mean (shiftstats.log_ratio_var, for the
    noise floor): one more square and a few sums per BN input. running_mean: the BN layers'
    running means, flat in `bns` order, when the caller holds them (else they are gathered).

    Each BN's sums are taken by a forward set on the BN instance for the pass and removed
    after it (the class's forward is untouched): forward pre-hooks cost ~50 µs more per layer
    and probe on a small MLP in its training loop (a handle per layer, and nn.Module's slow
    call path for every hooked call). Nothing stays on the model.
    """
    if not bns:
        empty = torch.zeros(0, dtype=torch.float64, device=x.device)
        out = (predict_logits(model, x, batch_size), empty, empty, [])
        return out + ((empty, empty),) if with_spread else out
    acc: list[tuple[list[torch.Tensor], int] | None] = [None] * len(bns)
    saved = [bn.__dict__.get("forward") for bn in bns]  # an instance forward of the user's
    for i, bn in enumerate(bns):
        inner = type(bn).forward if saved[i] is None else _unbound(saved[i])
        bn.__dict__["forward"] = _stat_forward(inner, bn, i, acc, with_spread)
    logits, total, counts = [], None, [0] * len(bns)
    k = 4 if with_spread else 2  # part k-1 is one value per BN, the others one per channel
    try:
        with mode(model, bn_train=False):
            for i in range(0, len(x), batch_size):
                logits.append(model(x[i : i + batch_size]))
                parts = list(acc)
                acc[:] = [None] * len(bns)
                sums = torch.cat([p[0][j] for j in range(k) for p in parts])
                # float32 within a chunk, float64 across chunks
                total = sums.double() if total is None else total + sums
                counts = [c + p[1] for c, p in zip(counts, parts, strict=True)]
    finally:
        for bn, own in zip(bns, saved, strict=True):
            if own is None:
                del bn.__dict__["forward"]
            else:
                bn.__dict__["forward"] = own
    logits = cat_chunks(logits)
    sizes = tuple(bn.num_features for bn in bns)
    inv_n = per_channel([1 / c for c in counts], sizes, x.device, torch.float64)
    n_ch = sum(sizes)
    offset, m2 = (total[: 2 * n_ch].view(2, n_ch) * inv_n).unbind()  # one multiply for both
    var = torch.addcmul(m2, offset, offset, value=-1).clamp_min_(0.0)
    if running_mean is None:
        running_mean = torch.cat([bn.running_mean for bn in bns])
    mean = offset + running_mean
    if not with_spread:
        return logits, mean, var, counts
    n = len(x)
    per_ch = rel_var(total[n_ch : 2 * n_ch], total[2 * n_ch : 3 * n_ch], n)
    sum_q = total[n_ch : 2 * n_ch]
    q_layer = sum_q.new_zeros(len(bns)).index_add_(  # Σ over a layer's channels of Σ_i q_ic
        0, torch.arange(len(bns), device=x.device).repeat_interleave(torch.tensor(sizes)), sum_q
    )
    return logits, mean, var, counts, (per_ch, rel_var(q_layer, total[3 * n_ch :], n))


def _unbound(forward: Any) -> Any:
    """An instance's own forward (a bound method or a plain callable), as f(module, x)."""
    return lambda _module, x: forward(x)


def predicted_shift(kind: str, rate: float, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """docs/science.md §2 train var / eval var per channel for Dropout(kind, rate) right before BN,
    from the dropout input's eval-mode mean μ and variance v (m2 = v + μ²).

    y = x·g with E[g] = 1, Var[g] = s² (the registry's noise moments; an unknown kind raises):
    train E[y²] = m2·(1 + s²), E[y] = μ, so train var / eval var = (m2·(1 + s²) − μ²) / v.
    """
    g_mean, g_var = noise_moments(kind, rate)
    m2, mu2 = var + mean * mean, (g_mean * mean) ** 2
    train_m2 = m2 * (g_mean * g_mean + g_var)
    return (train_m2 - mu2) / var.clamp_min(1e-12)


def shift_per_channel(
    eval_var: torch.Tensor, running_var: torch.Tensor, eps: torch.Tensor | float
) -> torch.Tensor:
    """max(eval/running, running/eval) per channel (≥ 1); eps (BN's own) guards dead channels."""
    ratio = (eval_var + eps) / (running_var + eps)
    return torch.maximum(ratio, 1.0 / ratio)


SPREAD_EVERY = 8  # records between two measurements of the noise floor's spread
# The per-channel statistics a record averages per layer, in the order of its table's columns;
# then the table's other columns (each layer's log-ratio quartiles and shift_li's floor).
STAT_KEYS = (
    "train_mean",
    "train_var",
    "running_mean",
    "running_var",
    "eval_mean",
    "eval_var",
    "shift",
    "shift_floor",
)
DERIVED_KEYS = ("shift_log_q1", "shift_log_median", "shift_log_q3", "shift_li_floor")
EVAL_VAR, RUNNING_VAR = STAT_KEYS.index("eval_var"), STAT_KEYS.index("running_var")


class BNProbe:
    """Measures every BN layer: attach(model) before training, step() after each training
    step, record(...) at each probe.

    >>> probe = BNProbe(model)
    >>> for xb, yb in batches: train_step(xb, yb); probe.step()
    >>> probe.record(x_val, batch_size)

    It puts nothing lasting on the model: record()'s eval pass sets a forward on each BN
    instance and removes it before it returns (any forward of the user's is put back).

    Its state is flat: one vector over the channels of every BN layer, running means first,
    then running variances, so a probe costs a few dozen tensor operations whatever the depth
    (one set of small ops per layer cost ~0.5 % of a small MLP's training time).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        flat_buffers: bool | None = None,
        layers: list[Unit] | None = None,
    ) -> None:
        """flat_buffers: re-seat the BN running buffers in one tensor (default: on CPU)."""
        # layers: the units to report, when the caller knows them (the SDK names a user's
        # model by its module tree and finds each BN's feeding weight by tracing a forward).
        self.model, self.units = model, (units(model) if layers is None else list(layers))
        self.bns = [u.bn for u in self.units if u.bn is not None]
        self._weights = [u.weight for u in self.units]  # for grad_norm, read at each record
        # BN updates its buffers in place, so these references stay valid for the whole run
        # (and spare step() a Module.__getattr__ per buffer).
        self.bufs = [bn.running_mean for bn in self.bns] + [bn.running_var for bn in self.bns]
        self.sizes = [bn.num_features for bn in self.bns]
        device = self.bufs[0].device if self.bufs else torch.device("cpu")
        if flat_buffers is None:
            flat_buffers = device.type == "cpu"
        self.flat = self._seat_flat() if flat_buffers and self.bufs else None
        self._constants(device)
        self.sums = torch.zeros(2 * sum(self.sizes), device=device)
        self.sum_views = list(self.sums.split(self.sizes * 2))  # in-place targets, one per buffer
        self._last: tuple[torch.Tensor | None, ...] = (None, None, None)  # emean, evar, shift
        self.last_layers: dict[str, dict[str, float | None]] = {}  # per BN unit, last record
        # The noise floor's spread (Var(q)/E[q]², per channel and per layer) changes slowly and
        # costs ~0.3 ms per eval pass on a small MLP: measured every SPREAD_EVERY records.
        self.records, self.spread = 0, None
        self._floor_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.reset_window()

    def _seat_flat(self) -> torch.Tensor:
        """Make every BN running buffer a view of one flat tensor (same values; BN keeps
        updating them in place), so step() is one add: on CPU a foreach over the buffers is
        one add per buffer (3.4 µs for six against 0.6 µs). CUDA's foreach is one fused kernel,
        and leaves the buffers where they are. The model must not be moved afterwards."""
        flat = torch.cat(self.bufs)
        views = flat.split(self.sizes * 2)
        for bn, mean, var in zip(self.bns, views, views[len(self.bns) :], strict=False):
            bn.running_mean, bn.running_var = mean, var  # Module.__setattr__: same buffer names
        self.bufs = list(views)
        return flat

    def _constants(self, device: torch.device) -> None:
        sizes = tuple(self.sizes)
        # Σ b_t over a window = S + c·(R_K − R_0), c = (1 − m)/m; cumulative BNs (momentum None)
        # are masked and use the telescoping form instead.
        momenta = [bn.momentum for bn in self.bns]
        coef = per_channel([(1 - m) / m if m else 0.0 for m in momenta], sizes, device)
        self.coef = coef.repeat(2)
        self.cumulative = None
        if None in momenta:
            mask = per_channel([float(m is None) for m in momenta], sizes, device)
            self.cumulative = mask.repeat(2).bool()
        self.eps = per_channel([bn.eps for bn in self.bns], sizes, device)
        # every layer's channel mean in one index_add over the flat channels: O(channels),
        # where a dense (layers, channels) averaging matrix grows as their product (a
        # DenseNet-BC-100 has 99 BNs over ~21k channels: 2M entries, 8 MB, per probe)
        self.layer_of = (
            torch.arange(len(sizes))
            .repeat_interleave(torch.tensor(sizes, dtype=torch.long))
            .to(device)
        )
        self.inv_sizes = torch.tensor([1.0 / c for c in sizes], device=device).view(-1, 1)
        self.quantiles = SegmentQuantiles(sizes, device) if sizes else None

    def _layer_means(self, rows: torch.Tensor) -> torch.Tensor:
        """(layers, keys): per layer, the mean over its channels of each row of (keys, channels)."""
        sums = rows.new_zeros(len(self.sizes), rows.shape[0]).index_add_(0, self.layer_of, rows.T)
        return sums * self.inv_sizes

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.units]

    def step(self) -> None:
        """After each training step (its forward in train mode updated the running buffers)."""
        if self.flat is not None:
            self.sums.add_(self.flat)  # S += running_t, on device
        elif self.bufs:
            torch._foreach_add_(self.sum_views, self.bufs)
        self.steps += 1

    # -------------------------------------------------------------- windows
    def reset_window(self, current: torch.Tensor | None = None) -> None:
        """Start averaging train-mode batch statistics afresh (after each probe)."""
        self.sums.zero_()  # in place: sum_views stay valid
        self.start = current if current is not None else self._current()
        self.start_t = self._tracked()
        self.steps = 0

    def _current(self) -> torch.Tensor:
        """The running buffers now, flat (a copy)."""
        if self.flat is not None:
            return self.flat.clone()
        return torch.cat(self.bufs) if self.bufs else self.sums.clone()

    def _tracked(self) -> torch.Tensor | None:
        """Per channel, batches each BN has tracked; only cumulative BNs need it."""
        if self.cumulative is None:
            return None
        t = torch.stack([bn.num_batches_tracked for bn in self.bns]).float()
        return t.repeat_interleave(torch.tensor(self.sizes, device=t.device)).repeat(2)

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": self.sums,
            "start": self.start,
            "start_t": self.start_t,
            "steps": self.steps,
            "records": self.records,
            "spread": self.spread,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.sums.device
        self.sums.copy_(state["sums"])  # in place: sum_views stay valid
        self.start = state["start"].to(device, copy=True)
        self.start_t = None if state["start_t"] is None else state["start_t"].to(device, copy=True)
        self.steps = int(state["steps"])
        self.records = int(state.get("records", 0))  # older checkpoints: measure afresh
        spread = state.get("spread")
        self.spread = None if spread is None else tuple(t.to(device) for t in spread)
        self._floor_cache = None

    def train_stats(
        self, ns: list[int], current: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch mean and biased batch variance per channel, averaged over the window, flat.

        ns: per BN, values per channel in one training batch (batch size × H × W).
        current: the running buffers now, flat (`_current()`).
        """
        total = torch.addcmul(self.sums, current - self.start, self.coef)
        if self.cumulative is not None:  # f = 1/t: Σ b_t = t_K·R_K − t_0·R_0 (telescoping)
            telescoped = self._tracked() * current - self.start_t * self.start
            total = torch.where(self.cumulative, telescoped, total)
        mean, var = total.div_(max(self.steps, 1)).chunk(2)
        return mean, var * self._unbiased_to_biased(ns)  # running_var is unbiased

    def _unbiased_to_biased(self, ns: list[int]) -> torch.Tensor:
        return per_channel([(n - 1) / max(n, 2) for n in ns], tuple(self.sizes), self.sums.device)

    # -------------------------------------------------------------- measuring
    @torch.no_grad()
    def record(
        self, x_eval: torch.Tensor, train_batch: int, *, fresh_spread: bool = False
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Measure every layer now (eval pass over x_eval); returns (eval logits, layer dicts).

        train_batch: samples per training batch. Starts a new window. fresh_spread: measure
        the noise floor's spread in this pass (else every SPREAD_EVERY records).

        Its fixed cost (what it adds to the eval pass's forward, whatever the model's size):
        ~40 small tensor operations over the flat channel vectors, one host read of one
        vector holding every layer's values and gradient norm, and one dict per layer; each
        operation is a few µs of dispatch on CPU, more when the training steps in between
        have evicted the probe's code and data from the caches (measured in
        docs/performance.md).
        """
        want = fresh_spread or self.spread is None or self.records % SPREAD_EVERY == 0
        current = self._current() if self.bns else None  # eval mode leaves the buffers alone
        n_ch = sum(self.sizes)
        out = eval_pass(
            self.model,
            x_eval,
            self.bns,
            with_spread=want,
            running_mean=None if current is None else current[:n_ch],
        )
        logits, emean, evar, counts = out[:4]
        if want:
            self.spread, self._floor_cache = out[4], None
        self.records += 1
        grads = [None if w is None else w.grad for w in self._weights]
        present = [g for g in grads if g is not None]
        norms = torch.stack(torch._foreach_norm(present)) if present else None
        if current is None:
            self.reset_window()
            values: list[list[float]] = []
            read = norms.tolist() if norms is not None else []
        else:
            ns = [train_batch * (c // len(x_eval)) for c in counts]  # batch × H × W
            tmean, tvar = self.train_stats(ns, current)
            rmean, rvar = current.chunk(2)
            floor_ch, floor_layer = self._floors(self.spread, len(x_eval), train_batch)
            evar = evar.float()
            ratio = (evar + self.eps) / (rvar + self.eps)  # eps (BN's own) guards dead channels
            shift = torch.maximum(ratio, ratio.reciprocal())  # shift_per_channel, ratio kept
            # signed: < 0 when BN divides by more variance than inference feeds it
            log_ratio = ratio.log()
            self._last = (emean, evar, shift)
            # per channel, flat, in STAT_KEYS order; each reported as its channel mean
            rows = torch.stack([tmean, tvar, rmean, rvar, emean.float(), evar, shift, floor_ch])
            table = torch.cat(  # (layers, 12): the 8 means, 3 quartiles, shift_li's floor
                [self._layer_means(rows), self.quantiles(log_ratio).float(), floor_layer[:, None]],
                1,
            )
            flat = table.view(-1) if norms is None else torch.cat([table.view(-1), norms])
            read = flat.tolist()  # the one CPU-GPU sync point
            width = len(STAT_KEYS) + 4
            values = [read[i : i + width] for i in range(0, len(self.bns) * width, width)]
            read = read[len(self.bns) * width :]
            self.reset_window(current)
        norm_of = iter(read)
        return logits, self._rows(values, [None if g is None else next(norm_of) for g in grads])

    def _floors(
        self, spread: tuple[torch.Tensor, torch.Tensor], n_eval: int, train_batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise floors if nothing shifted (shiftstats.log_ratio_var): per channel of `shift`
        (float32, flat) and per layer of `shift_li` (float32, one per BN)."""
        per_ch, per_layer = spread
        weights = [
            ema_weight(bn.momentum, int(bn.num_batches_tracked) if bn.momentum is None else 0)
            for bn in self.bns
        ]
        key = (n_eval, train_batch, tuple(weights))  # the cache is cleared with a new spread
        if self._floor_cache is not None and self._floor_cache[0] == key:
            return self._floor_cache[1]  # same spread and sample sizes: the same floors
        w_ch = per_channel(weights, tuple(self.sizes), per_ch.device, torch.float64)
        w_layer = torch.tensor(weights, dtype=torch.float64, device=per_ch.device)
        s_ch = log_ratio_var(per_ch, n_eval, train_batch, w_ch).sqrt()
        s_layer = log_ratio_var(per_layer, n_eval, train_batch, w_layer).sqrt()
        floors = fold_mean(s_ch).float(), fold_mean(s_layer).float()
        self._floor_cache = (key, floors)
        return floors

    def _split(self, flat: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if flat is None:  # no BN layer, or nothing recorded yet
            return {}
        names = [u.name for u in self.units if u.bn is not None]
        return dict(zip(names, flat.split(self.sizes), strict=True))

    @property
    def last_shift_per_channel(self) -> dict[str, torch.Tensor]:
        """Per BN unit name, the last record's shift per channel."""
        return self._split(self._last[2])

    @property
    def last_eval(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per BN unit name, the last record's (mean, var) per channel of what inference
        feeds it."""
        means, variances = self._split(self._last[0]), self._split(self._last[1])
        return {k: (means[k], variances[k]) for k in means}

    def _rows(self, values: list[list[float]], grads: list[float | None]) -> list[dict[str, Any]]:
        """One dict per unit: index, name and every registry LAYER_KEYS entry, by name; and
        `last_layers` (per BN unit, the measured values as read, before _finite).

        values: per BN unit, its row of the record's table (STAT_KEYS means, the log-ratio
        quartiles, shift_li's floor); grads: per unit, its weight's gradient norm or None."""
        rows: list[dict[str, Any]] = []
        last: dict[str, dict[str, float | None]] = {}
        it = iter(values)
        for i, u in enumerate(self.units):
            if u.bn is None:
                named: dict[str, float | None] = dict.fromkeys(BN_LAYER_KEYS)
            else:
                v = next(it)
                measured: dict[str, float | None] = dict(zip(STAT_KEYS, v, strict=False))
                # docs/science.md §1: Li et al.'s statistic from the layer's mean variances
                measured["shift_li"] = shift_li(v[EVAL_VAR], v[RUNNING_VAR])
                measured.update(zip(DERIVED_KEYS, v[len(STAT_KEYS) :], strict=True))
                last[u.name] = measured
                named = dict(measured)
            named["grad_norm"] = grads[i]
            row: dict[str, Any] = {"index": i, "name": u.name}
            row.update((k, _finite(named[k])) for k in LAYER_KEYS)  # KeyError: not measured
            rows.append(row)
        self.last_layers = last
        return rows


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None
