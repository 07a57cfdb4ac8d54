"""The engine's BN probe on any nn.Module (torch; imported by Run.watch, not by `import bnlab`).

A user's model is not a bnlab Net: its BN layers sit in residual branches, nested containers or
modules the user wrote. Every BatchNorm1d/2d/3d and SyncBatchNorm (any _BatchNorm with running
statistics) is reported, named by its place in the module tree (`layer2.0.bn1`), and every
dropout module is listed the same way. Which weight feeds a BN (for grad_norm) and which
dropout sits right before one (for the predicted shift) come from one traced eval-mode forward
of a few held-out samples, in call order, since registration order says nothing about data flow
(a pre-activation block registers bn1 before the conv that feeds it).

Nothing stays on the model: the trace's hooks go when it ends, the probe's eval passes hook
and unhook, and detach() gives each BN its own buffers back (the probe seats them in one flat
tensor on CPU, so that step() is one add). Training is bit-identical: the probe only reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.overrides import TorchFunctionMode

from bnlab.core.registry import DROPOUT_KINDS, LAYER_KEYS
from bnlab.engine.dropout import Dropout as BnlabDropout
from bnlab.engine.evaluate import summary_accuracies as engine_summary_accuracies
from bnlab.engine.evaluate import train_mode_logits
from bnlab.engine.probes import BNProbe, Unit, predicted_shift

DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    BnlabDropout,
)
WEIGHTED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
# Normalisation modules bnlab does not probe (no running statistics to shift), named in the
# note a model without BatchNorm gets; their own functional calls are not counted again.
OTHER_NORMS = (nn.LayerNorm, nn.GroupNorm, _InstanceNorm, nn.LocalResponseNorm, nn.RMSNorm)
# Normalisation called as a function (F.batch_norm(x, mean, var, ...) in a forward, torch.*
# alike): seen by a TorchFunctionMode during the trace, outside any normalisation module.
NORM_FUNCTIONS = {
    F.batch_norm: "F.batch_norm",
    torch.batch_norm: "F.batch_norm",
    F.layer_norm: "F.layer_norm",
    torch.layer_norm: "F.layer_norm",
    F.group_norm: "F.group_norm",
    torch.group_norm: "F.group_norm",
    F.instance_norm: "F.instance_norm",
    torch.instance_norm: "F.instance_norm",
    F.rms_norm: "F.rms_norm",
    torch.rms_norm: "F.rms_norm",
    F.local_response_norm: "F.local_response_norm",
}


@dataclass
class DropoutInfo:
    name: str
    kind: str  # the registry's dropout kind for the predicted shift, else the class name
    rate: float
    before_bn: str | None = None  # the BN it feeds directly, if any


def dropout_kind(module: nn.Module) -> tuple[str, float]:
    """(kind, rate): bnlab's own kinds, torch's inverted-Bernoulli dropouts as 'bernoulli';
    alpha dropout keeps its class name (its noise is not multiplicative: no prediction)."""
    if isinstance(module, BnlabDropout):
        return module.kind, float(module.rate)
    if isinstance(module, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
        return type(module).__name__, float(module.p)
    return "bernoulli", float(module.p)


def as_batch(
    held_out: Any, limit: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y or None) from a tensor, an (x, y) pair, or an iterable of either (a DataLoader);
    at most `limit` samples, on the model's device."""
    if isinstance(held_out, torch.Tensor):
        return held_out[:limit].to(device), None
    if (
        isinstance(held_out, (tuple, list))
        and len(held_out) == 2
        and all(isinstance(t, torch.Tensor) for t in held_out)
        and held_out[0].shape[:1] == held_out[1].shape[:1]
        and held_out[1].dim() == 1
    ):
        return held_out[0][:limit].to(device), held_out[1][:limit].to(device)
    if not isinstance(held_out, Iterable):
        raise TypeError("held_out: give a tensor batch, an (x, y) pair, or an iterable of them")
    xs, ys, n = [], [], 0
    for item in held_out:
        x, y = as_batch(item, limit - n, device)
        xs.append(x)
        if y is not None:
            ys.append(y)
        n += len(x)
        if n >= limit:
            break
    if not xs:
        raise ValueError("held_out: the iterable gave no batch")
    return torch.cat(xs), (torch.cat(ys) if len(ys) == len(xs) else None)


class _NormCalls(TorchFunctionMode):
    """Counts the normalisation functions a forward calls outside normalisation modules (a
    model that normalises with F.batch_norm on its own tensors has nothing bnlab can probe)."""

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts, self.inside = counts, 0

    def enter_module(self, *_: Any) -> None:
        self.inside += 1

    def leave_module(self, *_: Any) -> None:
        self.inside -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = NORM_FUNCTIONS.get(func)
        if name is not None and not self.inside:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def trace(model: nn.Module, x: torch.Tensor, norm_calls: Counter | None = None) -> list[nn.Module]:
    """Leaf modules in the order one eval-mode forward of x calls them (hooks removed after;
    the RNG state is restored, so the user's random stream is untouched). norm_calls, when
    given, counts the functional normalisation calls made outside normalisation modules."""
    order: list[nn.Module] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(lambda mod, _args: order.append(mod)) for m in leaves]
    mode = None if norm_calls is None else _NormCalls(norm_calls)
    if mode is not None:
        for m in model.modules():
            if isinstance(m, (_BatchNorm, *OTHER_NORMS)):
                handles.append(m.register_forward_pre_hook(mode.enter_module))
                handles.append(m.register_forward_hook(mode.leave_module, always_call=True))
    saved = [(m, m.training) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]):
            for m, _ in saved:
                object.__setattr__(m, "training", False)
            if mode is None:
                model(x)
            else:
                with mode:
                    model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in saved:
            object.__setattr__(m, "training", training)
    return order


def layout(
    model: nn.Module, x: torch.Tensor, norm_calls: Counter | None = None
) -> tuple[list[Unit], list[DropoutInfo], list[str]]:
    """(BN units, dropouts, BNs skipped because they keep no running statistics); norm_calls
    as trace()'s."""
    names = {m: n for n, m in model.named_modules()}
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    skipped = [n for n, m in bns if m.running_mean is None or m.running_var is None]
    drops = {
        m: DropoutInfo(n, *dropout_kind(m))
        for n, m in model.named_modules()
        if isinstance(m, DROPOUTS)
    }
    feeder: dict[nn.Module, nn.Parameter] = {}
    try:
        order = trace(model, x[:2] if len(x) >= 2 else x, norm_calls)
    except Exception:  # a model the trace cannot run (odd input): names still work
        order = []
    last_weight: nn.Parameter | None = None
    prev: nn.Module | None = None
    for m in order:
        if isinstance(m, _BatchNorm) and m not in feeder and last_weight is not None:
            feeder[m] = last_weight
            if prev in drops and drops[prev].before_bn is None:
                drops[prev].before_bn = names[m]
        if isinstance(m, WEIGHTED) and getattr(m, "weight", None) is not None:
            last_weight = m.weight
        prev = m
    units = [Unit(n, m, feeder.get(m)) for n, m in bns if n not in skipped]
    return units, list(drops.values()), skipped


class ModelProbe:
    """The engine's BNProbe on a user's model plus what the SDK needs around it."""

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, batch_size: int | None
    ) -> None:
        self.model, self.x, self.y = model, x, y
        self.norm_calls: Counter = Counter()
        self.units, self.dropouts, self.skipped = layout(model, x, self.norm_calls)
        self.probe = BNProbe(model, layers=self.units)
        self.batch_size = batch_size
        self._hook = None
        if batch_size is None:  # learn it from the first training forward, then unhook
            self._hook = model.register_forward_pre_hook(self._learn_batch)

    def _learn_batch(self, module: nn.Module, args: tuple) -> None:
        if module.training and args and isinstance(args[0], torch.Tensor):
            self.batch_size = len(args[0])
            self._unhook()

    def _unhook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    @property
    def names(self) -> list[str]:
        return self.probe.names

    def step(self) -> None:
        self.probe.step()

    @torch.no_grad()
    def record(
        self, train_mode: bool = True
    ) -> tuple[list[list[float | None] | None], dict[str, float | None]]:
        """(one row of LAYER_KEYS values per unit, held-out metrics). One host sync (+1 with
        labels). train_mode=False: no train-mode pass (val_acc_train_mode null), as the
        engine's probe.train_mode_every does between its passes."""
        batch = self.batch_size or len(self.x)
        logits, rows = self.probe.record(self.x, batch)
        layers = [[row[k] for k in LAYER_KEYS] for row in rows]
        metrics: dict[str, float | None] = {}
        if self.y is not None:
            vals = [F.cross_entropy(logits, self.y), (logits.argmax(1) == self.y).float().mean()]
            if train_mode:
                # val_acc_train_mode as the engine records it: real model.train() (dropout on,
                # BN on batch statistics), random state restored, a trailing batch of one left out
                tm = train_mode_logits(
                    self.model, self.x, batch, dropout=True, seed=None, fast_masks=True
                )
                vals.append((tm.argmax(1) == self.y[: len(tm)]).float().mean())
            values = torch.stack(vals).tolist() + [None] * (3 - len(vals))
            metrics = dict(zip(("val_loss", "val_acc", "val_acc_train_mode"), values, strict=True))
        return layers, metrics

    def normalisation(self) -> dict[str, int]:
        """What normalises this model: BN and other normalisation modules by class, and the
        functional calls a forward makes outside them (F.batch_norm: 12), with counts."""
        found: Counter = Counter(
            type(m).__name__
            for m in self.model.modules()
            if isinstance(m, (_BatchNorm, *OTHER_NORMS))
        )
        found.update({f"{name} calls": n for name, n in self.norm_calls.items()})
        return dict(found)

    def notes(self) -> list[str]:
        """What a person should know about this model's probe: no BatchNorm module to probe
        (and what normalises it instead), functional batch norm left unprobed, BN layers
        without running statistics."""
        found = self.normalisation()
        calls = self.norm_calls.get("F.batch_norm", 0)
        out = []
        if not self.units:
            other = ", ".join(f"{k} x{n}" for k, n in found.items()) or "no normalisation at all"
            out.append(
                f"no BatchNorm module to probe in {type(self.model).__name__} (bnlab measures "
                f"nn.BatchNorm1d/2d/3d and SyncBatchNorm modules with running statistics); "
                f"found: {other}. "
                + (
                    "F.batch_norm called on the model's own tensors cannot be probed: use "
                    "nn.BatchNorm modules to get per-layer statistics. "
                    if calls
                    else ""
                )
                + "Run-level metrics are still recorded."
            )
        elif calls:
            out.append(
                f"{calls} F.batch_norm call(s) outside BatchNorm modules are not probed (only "
                f"the {len(self.units)} nn.BatchNorm modules are)"
            )
        if self.skipped:
            out.append(
                f"{len(self.skipped)} BatchNorm layer(s) keep no running statistics "
                f"(track_running_stats=False) and are not probed: {', '.join(self.skipped[:10])}"
            )
        return out

    def predicted_shifts(self) -> dict[str, float]:
        """docs/science.md §2's ratio for each BN fed directly by a (multiplicative) dropout,
        from the last record's eval-mode input statistics; the first such BN should match its
        `shift`."""
        last = self.probe.last_eval
        out = {}
        for d in self.dropouts:
            if d.before_bn in last and d.kind in DROPOUT_KINDS:  # multiplicative, E[g] = 1
                mean, var = last[d.before_bn]
                out[d.before_bn] = predicted_shift(d.kind, d.rate, mean, var).mean().item()
        return out

    def summary(self) -> dict[str, Any]:
        per_channel = self.probe.last_shift_per_channel
        return {
            "shift_by_layer": {k: v.mean().item() for k, v in per_channel.items()},
            "shift_predicted_by_layer": self.predicted_shifts(),
            "model": {
                "class": type(self.model).__name__,
                "params": sum(p.numel() for p in self.model.parameters()),
                "bn_layers": self.names,
                "bn_without_running_stats": self.skipped,
                "normalisation": self.normalisation(),
                "dropouts": [vars(d) for d in self.dropouts],
            },
        }

    def detach(self) -> None:
        """Leave the model as the user built it: no hook, each BN's buffers its own again."""
        self._unhook()
        if self.probe.flat is not None:
            for bn in self.probe.bns:
                bn.running_mean = bn.running_mean.clone()
                bn.running_var = bn.running_var.clone()
            self.probe.flat = None
            self.probe.bufs = []


@torch.no_grad()
def summary_accuracies(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    x_train: torch.Tensor | None,
    batch_size: int,
    train_mode_sizes: Iterable[int] = (1, 8, 64),
    recalibrate_samples: int = 2048,
) -> dict[str, Any]:
    """The accuracies bnlab's own runs report at the end (the engine's summary_accuracies):
    eval mode, train mode per test batch size (dropout on, and BN only), PreciseBN-recalibrated
    when training inputs are given. Train mode with dropout draws random numbers: on a forked
    RNG, so the user's random stream is what it would have been without bnlab."""
    data = SimpleNamespace(x_test=x, y_test=y, x_train=x_train)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        acc = engine_summary_accuracies(
            model,
            data,
            batch_size=batch_size,
            train_mode_sizes=list(train_mode_sizes),
            recalibrate_samples=recalibrate_samples if x_train is not None else None,
        )
    return _numbers(acc)


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value.item() if isinstance(value, torch.Tensor) else value
