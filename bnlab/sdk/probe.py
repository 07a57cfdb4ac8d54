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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MethodType, SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.parallel import DataParallel, DistributedDataParallel
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


LABEL_KEYS = ("labels", "label", "y", "targets", "target")  # in a mapping batch
TINY_BATCH = 8  # train-mode BN on fewer samples per batch than this: noisy batch statistics


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile: the
    probe's passes run on rank 0 alone, so they must not go through DDP's collectives."""
    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def local_sync_bn(model: nn.Module) -> Iterator[None]:
    """SyncBatchNorm as plain BN for the probe's own train-mode passes: they run on one rank,
    so the all-reduce SyncBatchNorm does in train mode would wait for ranks that never come
    (and on CPU it refuses outright). Per-rank batch statistics are what a forgotten
    model.eval() uses on each device anyway."""
    # (nested: an evaluate() inside the probe's own passes patches once)
    syncs = [
        m for m in model.modules() if isinstance(m, nn.SyncBatchNorm) and "forward" not in vars(m)
    ]
    for m in syncs:
        m.forward = MethodType(_BatchNorm.forward, m)
    try:
        yield
    finally:
        for m in syncs:
            del m.forward


def logits_of(out: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, `.logits` / ["logits"] (Hugging
    Face's ModelOutput), or the first tensor of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    found = getattr(out, "logits", None)
    if found is None and isinstance(out, Mapping):
        found = out.get("logits")
    if found is None and isinstance(out, (tuple, list)):
        found = next((o for o in out if isinstance(o, torch.Tensor)), None)
    if not isinstance(found, torch.Tensor):
        raise TypeError(f"watch: cannot find logits in the model's output ({type(out).__name__})")
    return found


class _Logits(nn.Module):
    """The user's model giving plain logits (the probe's passes cat and score them). The
    model is held, not registered: its state_dict and module names stay the user's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.inner(x))

    def modules(self) -> Iterator[nn.Module]:  # mode() walks the model's modules
        return self.inner.modules()

    def train(self, mode: bool = True) -> _Logits:
        self.inner.train(mode)
        return self


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
    if isinstance(held_out, Mapping):  # a Hugging Face style batch: {"pixel_values", "labels"}
        y = next(
            (held_out[k] for k in LABEL_KEYS if isinstance(held_out.get(k), torch.Tensor)), None
        )
        x = next(
            (v for k, v in held_out.items() if k not in LABEL_KEYS and isinstance(v, torch.Tensor)),
            None,
        )
        if x is None:
            raise TypeError("held_out: a batch given as a mapping needs a tensor of inputs")
        return as_batch(x if y is None else (x, y), limit, device)
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
        model = unwrap(model)
        self.model, self.x, self.y = model, x, y
        self.norm_calls: Counter = Counter()
        self.units, self.dropouts, self.skipped = layout(model, x, self.norm_calls)
        self.logits = _Logits(model)
        # Under DDP the buffers are DDP's to broadcast (it keeps its own list of them): not
        # re-seated into one flat tensor there.
        self.probe = BNProbe(
            self.logits, layers=self.units, flat_buffers=False if distributed() else None
        )
        self.has_sync_bn = any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        self.check: ModeCheck | None = None
        self.batch_size = batch_size
        self._hook = None
        if batch_size is None:  # learn it from the first training forward, then unhook
            self._hook = model.register_forward_pre_hook(self._learn_batch)

    def __deepcopy__(self, memo: dict) -> ModelProbe:  # as ModeCheck's: copies stay inert
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self.model, self._hook = None, None

    def _learn_batch(self, module: nn.Module, args: tuple) -> None:
        if module is not self.model:
            return
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
        with self.own_passes():
            return self._record(batch, train_mode)

    @contextmanager
    def own_passes(self) -> Iterator[None]:
        """bnlab's own forwards: the mode check looks away, SyncBatchNorm stays local."""
        if self.check is not None:
            self.check.paused += 1
        try:
            if self.has_sync_bn:
                with local_sync_bn(self.model):
                    yield
            else:
                yield
        finally:
            if self.check is not None:
                self.check.paused -= 1

    def _record(
        self, batch: int, train_mode: bool
    ) -> tuple[list[list[float | None] | None], dict[str, float | None]]:
        logits, rows = self.probe.record(self.x, batch)
        layers = [[row[k] for k in LAYER_KEYS] for row in rows]
        metrics: dict[str, float | None] = {}
        if self.y is not None:
            vals = [F.cross_entropy(logits, self.y), (logits.argmax(1) == self.y).float().mean()]
            if train_mode:
                # val_acc_train_mode as the engine records it: real model.train() (dropout on,
                # BN on batch statistics), random state restored, a trailing batch of one left out
                tm = train_mode_logits(
                    self.logits, self.x, batch, dropout=True, seed=None, fast_masks=True
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
            "held_out_samples": len(self.x),
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
        if self.check is not None:
            self.check.remove()
        if self.probe.flat is not None:
            for bn in self.probe.bns:
                bn.running_mean = bn.running_mean.clone()
                bn.running_var = bn.running_var.clone()
            self.probe.flat = None
            self.probe.bufs = []


class ModeCheck:
    """The user's own mode mistakes, seen live in their loop (issue 23):

    - an evaluation pass (a forward with gradients off: torch.no_grad / inference_mode) while
      BN layers are in train mode (each such pass moves the running statistics and normalises
      by the batch's own) or dropout is active: model.eval() was forgotten;
    - BN layers whose running statistics never move while the loop trains (the model left in
      eval mode, momentum 0, or layers never called);
    - train-mode BN on batches of one sample, or mostly of fewer than TINY_BATCH.

    Each is reported once through `report(text)` (a warning in the script and a note on the
    run). Two forward pre-hooks (the model and its first BN), each a few attribute reads per
    forward; nothing reads the device until a probe checks the running statistics.
    """

    def __init__(self, model: nn.Module, units: list[Unit], report: Callable[[str], None]) -> None:
        self.model, self.report = model, report
        self.bns = [u.bn for u in units if u.bn is not None]
        self.drops = [m for m in model.modules() if isinstance(m, DROPOUTS) and _rate(m) > 0]
        self.paused = 0  # > 0 inside bnlab's own passes
        self.eval_in_train = 0  # forwards without gradients with BN in train mode
        self.eval_dropout = 0  # ... with dropout active
        self.train_forwards, self.ones, self.tiny = 0, 0, 0
        self.sizes: Counter = Counter()
        self.told: set[str] = set()
        self.start = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in self.bns]
        self.still = list(range(len(self.bns)))  # BNs not yet seen moving
        self.handles = [model.register_forward_pre_hook(self._forward)]
        if self.bns:
            self.handles.append(self.bns[0].register_forward_pre_hook(self._first_bn))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # A copy of the model (an EMA model, a recalibration's copy, torch.save(model)) carries
    # these hooks along: there they stay inert (they act on the watched modules only) and
    # never drag the run (its threads and locks) into the copy.
    def __deepcopy__(self, memo: dict) -> ModeCheck:
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self.model, self.bns, self.paused, self.handles = None, [], 1, []

    def _once(self, kind: str, text: str) -> None:
        if kind not in self.told:
            self.told.add(kind)
            self.report(text)

    def _forward(self, module: nn.Module, _args: tuple) -> None:
        if self.paused or torch.is_grad_enabled() or module is not self.model:
            return  # training, bnlab's own pass, or a copy of the model: nothing to check
        bn_train = [bn for bn in self.bns if bn.training and bn.track_running_stats]
        drop_on = [d for d in self.drops if d.training]
        if bn_train:
            self.eval_in_train += 1
            self._once(
                "eval_bn_train",
                f"an evaluation pass (a forward under torch.no_grad / inference_mode) ran with "
                f"{len(bn_train)} BatchNorm layer(s) in train mode: it normalised by each "
                f"batch's own statistics and moved the running statistics. Call model.eval() "
                f"before evaluating (and model.train() after). If this was a deliberate BN "
                f"recalibration, ignore this.",
            )
        if drop_on:
            self.eval_dropout += 1
            self._once(
                "eval_dropout",
                f"an evaluation pass (a forward under torch.no_grad / inference_mode) ran with "
                f"{len(drop_on)} dropout layer(s) active ({_names(self.model, drop_on)}): its "
                f"accuracy is that of a randomly thinned network. Call model.eval() before "
                f"evaluating (MC dropout on purpose: ignore this).",
            )

    def _first_bn(self, module: nn.Module, args: tuple) -> None:
        if self.paused or not module.training or not torch.is_grad_enabled():
            return
        if module is not self.bns[0]:  # the same BN in a copy of the model
            return
        n = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else None
        if n is None:
            return
        self.train_forwards += 1
        self.sizes[n] += 1
        if n == 1:
            self.ones += 1
            self._once(
                "batch_one",
                "a training forward with BatchNorm in train mode got a batch of 1 sample: BN "
                "then normalises each sample by its own statistics (BatchNorm1d refuses; "
                "BatchNorm2d silently acts as instance norm). Drop the last incomplete batch "
                "(DataLoader(drop_last=True)) or batch more samples.",
            )
        elif n < TINY_BATCH:
            self.tiny += 1

    def check(self, steps: int) -> None:
        """At a probe: tiny batches (most of them) and BN statistics that never moved (after
        a few steps; one device read while some layer has not been seen moving)."""
        if self.train_forwards >= 4 and self.tiny * 2 > self.train_forwards:
            typical = self.sizes.most_common(1)[0][0]
            self._once(
                "tiny_batches",
                f"most training batches reach BatchNorm with fewer than {TINY_BATCH} samples "
                f"(typically {typical}): batch statistics that noisy make BN's running "
                f"statistics and its train/eval behaviour diverge. Use larger batches, "
                f"GroupNorm/LayerNorm, or freeze BN (eval mode) for fine-tuning.",
            )
        if not self.still or steps < 10:
            return
        with torch.no_grad():
            moved = torch.stack(
                [
                    torch.logical_or(
                        (self.bns[i].running_mean != self.start[i][0]).any(),
                        (self.bns[i].running_var != self.start[i][1]).any(),
                    )
                    for i in self.still
                ]
            ).tolist()
        self.still = [i for i, m in zip(self.still, moved, strict=True) if not m]
        if self.still:
            names = _names(self.model, [self.bns[i] for i in self.still])
            self._once(
                "never_moved",
                f"{len(self.still)} of {len(self.bns)} BatchNorm layer(s) kept their running "
                f"statistics unchanged through {steps} training steps ({names}): the model "
                f"trains in eval mode (model.train() missing?), their momentum is 0, or they "
                f"are never called. Frozen on purpose: ignore this.",
            )
            self.still = []  # told once


def _rate(m: nn.Module) -> float:
    return float(getattr(m, "p", getattr(m, "rate", 0.0)) or 0.0)


def _names(model: nn.Module, modules: list[nn.Module], shown: int = 5) -> str:
    by = {m: n for n, m in model.named_modules()}
    names = [by.get(m, type(m).__name__) or type(m).__name__ for m in modules]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


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
    model = unwrap(model)
    with torch.random.fork_rng(devices=devices), local_sync_bn(model):
        acc = engine_summary_accuracies(
            _Logits(model),
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
