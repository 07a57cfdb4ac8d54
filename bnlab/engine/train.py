"""train(cfg, sink): build, train, probe and evaluate one experiment (the loop on one screen).

The hot loop is forward, loss, zero_grad, backward, step, plus one on-device sum for the
probe and three list appends for the metric window; every probe.every_steps steps the probe
measures each BN layer and the sink gets a ProbeRecord. NaN/inf loss ends the run as
`diverged`, a sink asking to stop as `cancelled`; neither raises. Epoch-end checkpoints
make a crashed run resumable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from bnlab.core.registry import WEIGHT_LAYER, noise_moments
from bnlab.core.schema.experiment import ExperimentConfig

from .augment import CropFlip
from .checkpoint import (
    config_fingerprint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .data import Data, batches, load_dataset, steps_per_epoch
from .evaluate import UNDEFINED_AT_ONE, predict_logits, summary_accuracies, train_mode_logits
from .export import export_all
from .gradnoise import grad_cosine
from .model import build_model
from .probes import BNProbe, predicted_shift
from .repro import environment
from .schedule import lr_at
from .shiftpredict import extra_variance, residual_predictions
from .shiftstats import predicted_shift_through_weight, shift_li
from .sinks import MemorySink, MetricSink, ProbeRecord

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """An invalid experiment config; the message names the field path."""


@dataclass
class TrainResult:
    status: str  # succeeded | diverged | cancelled
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None


def validate_config(cfg: ExperimentConfig | dict) -> ExperimentConfig:
    """ExperimentConfig from a dict (or as is); a ConfigError names each bad field."""
    if isinstance(cfg, ExperimentConfig):
        return cfg
    try:
        return ExperimentConfig.model_validate(cfg)
    except ValidationError as e:
        msgs = [
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in e.errors()
        ]
        raise ConfigError("; ".join(msgs)) from None


def resolve_device(name: str) -> torch.device:
    """auto → first CUDA device, else CPU; cuda / cuda:N must exist."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and (
        not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(f"train.device: {name} is not available on this machine")
    return dev


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def make_optimizer(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        nesterov=t.nesterov,
    )


def channels_last(cfg: ExperimentConfig, device: torch.device) -> bool:
    """A conv net on CUDA trains channels-last (the layout cuDNN's fastest kernels use), except
    in deterministic mode, which keeps the default layout and cuDNN's fixed algorithms."""
    return (
        device.type == "cuda"
        and cfg.model.arch != "mlp"
        and not torch.are_deterministic_algorithms_enabled()
    )


def batch_prep(cfg: ExperimentConfig, data: Data, device: torch.device) -> Any:
    """xb -> the batch the model trains on: augmented (train.augment) and channels-last when
    the model is (channels_last()); on the device throughout."""
    fmt = torch.channels_last if channels_last(cfg, device) else torch.contiguous_format
    if cfg.train.augment:
        c = data.x_train.shape[1]
        mean = data.input_mean if data.input_mean is not None else np.zeros(c)
        std = data.input_std if data.input_std is not None else np.ones(c)
        fill = torch.as_tensor(-mean / std, dtype=torch.float32, device=device)  # black pixel
        return CropFlip(fill, memory_format=fmt)
    if fmt is torch.channels_last:
        return lambda xb: xb.contiguous(memory_format=fmt)
    return lambda xb: xb


class Window:
    """Train loss/accuracy over the steps since the last probe.

    A step only keeps references to its loss and logits (on the device); they are reduced
    once per probe. An argmax per step cost 0.3 % of a small MLP's step, a full reduction
    (argmax, compare, sum, two adds) ~1 %. Every training batch has the same size
    (drop_last), so the window's loss is the plain mean of its steps' losses.
    """

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        self.logits.append(logits.detach())
        self.targets.append(y)

    def means(self) -> torch.Tensor:
        """(mean loss, accuracy) as a device tensor; zeros for an empty window."""
        if not self.losses:
            return torch.zeros(2)
        correct = torch.cat(self.logits).argmax(1) == torch.cat(self.targets)
        return torch.stack([torch.stack(self.losses).mean(), correct.float().mean()])

    def finite(self) -> torch.Tensor:
        """0-d bool tensor: no loss in the window is NaN or infinite."""
        return torch.stack(self.losses).isfinite().all() if self.losses else torch.tensor(True)

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "logits": self.logits, "targets": self.targets}

    def load_state_dict(self, s: dict[str, Any], device: torch.device) -> None:
        self.losses, self.logits, self.targets = (
            [t.to(device) for t in s[k]] for k in ("losses", "logits", "targets")
        )


class Run:
    """The state of one training run; train() below drives it."""

    def __init__(
        self, cfg: ExperimentConfig, data: Data, device: torch.device, sink: MetricSink
    ) -> None:
        if (
            cfg.train.precision == "bf16"
            and device.type == "cuda"
            and not torch.cuda.is_bf16_supported(including_emulation=False)
        ):  # emulated bf16 (pre-Ampere) would run slower than fp32, not faster
            raise ConfigError(
                f"train.precision: bf16 needs a GPU with native bfloat16 (compute capability "
                f"8.0 or newer, e.g. A100, L4, H100); {device} has none: use fp32"
            )
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.data, self.device, self.sink = cfg, data, device, sink
        self.model = build_model(cfg.model, data.in_shape, data.n_classes).to(device)
        # conv algorithms picked by timing (batch shapes never change), unless deterministic
        if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True
        if channels_last(cfg, device):  # model and batches in the same layout
            self.model.to(memory_format=torch.channels_last)
        self.prep = batch_prep(cfg, data, device)
        # bf16 autocast for the training forward only; weights, grads, BN running stats (and so
        # the probe's sums) stay fp32, and probes and evaluation run in fp32.
        bf16 = cfg.train.precision == "bf16"
        # (fp32: a null context; a disabled autocast still costs ~3 µs per step to enter)
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        self.opt = make_optimizer(cfg, self.model)
        self.probe = BNProbe(self.model)
        self.window = Window()
        self.batch = min(cfg.train.batch_size, len(data.x_train))  # samples per training batch
        self.per_epoch = steps_per_epoch(len(data.x_train), cfg.train.batch_size)
        self.total_steps = cfg.train.epochs * self.per_epoch
        n_eval = cfg.probe.eval_batches * cfg.train.batch_size
        self.x_eval, self.y_eval = data.x_val[:n_eval], data.y_val[:n_eval]
        self.step = self.epoch = 0
        self.train_s = 0.0  # seconds spent training (this process, without the final evaluation)

    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": config_fingerprint(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "probe": self.probe.state_dict(),
            "window": self.window.state_dict(),
        }

    def resume(self, path: Path | None) -> bool:
        """Continue from the checkpoint at path if it belongs to this config."""
        try:
            state = load_checkpoint(path) if path else None
        except (
            Exception
        ) as e:  # unreadable (or refused by weights_only): start afresh, don't fail every retry
            log.warning("ignoring unreadable checkpoint %s: %s", path, e)
            return False
        if not isinstance(state, dict) or state.get("fingerprint") != config_fingerprint(self.cfg):
            return False
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.probe.load_state_dict(
            {
                k: [t.to(self.device) for t in v] if isinstance(v, list) else v
                for k, v in state["probe"].items()
            }
        )
        self.window.load_state_dict(state["window"], self.device)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        set_rng_state(state["rng"])
        return True

    def train_mode_due(self) -> bool:
        """Whether this probe runs the real train-mode validation pass: at the steps that are
        multiples of probe.train_mode_every x probe.every_steps, and at the run's last step."""
        p = self.cfg.probe
        return self.step % (p.train_mode_every * p.every_steps) == 0 or (
            self.step == self.total_steps
        )

    def probe_now(self) -> str | None:
        """Measure and emit one ProbeRecord; returns 'diverged' | 'cancelled' | None."""
        train_loss, train_acc = self.window.means().tolist()  # CPU-GPU sync point
        if not math.isfinite(train_loss):
            return "diverged"
        logits, layers = self.probe.record(self.x_eval, self.batch)
        val = [
            F.cross_entropy(logits, self.y_eval),
            (logits.argmax(1) == self.y_eval).float().mean(),
        ]
        if self.train_mode_due():
            # Real train mode (model.train(): dropout on, BN on batch statistics) at the
            # training batch size; its dropout draws come from the current random state, which
            # is restored afterwards, so the training's random stream is untouched. A trailing
            # batch of one is left out. Bernoulli masks by the faster route (same
            # distribution): ~0.5 ms less per probe.
            tm = train_mode_logits(
                self.model, self.x_eval, self.batch, dropout=True, seed=None, fast_masks=True
            )
            val.append((tm.argmax(1) == self.y_eval[: len(tm)]).float().mean())
        # CPU-GPU sync point; val_acc_train_mode is None at the probes without the pass
        val_loss, val_acc, val_acc_train_mode = [*torch.stack(val).tolist(), None][:3]
        metrics = {
            "epoch": self.step / steps_per_epoch(len(self.data.x_train), self.cfg.train.batch_size),
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "val_acc_train_mode": val_acc_train_mode,
            "lr": self.opt.param_groups[0]["lr"],
        }
        if self.cfg.probe.grad_noise:  # opt-in: one fresh and up to 32 reference backward passes
            metrics["grad_cos"] = grad_cosine(
                self.model, self.data.x_train, self.data.y_train, self.batch, self.step
            )
        self.window = Window()
        self.sink.on_probe(ProbeRecord(self.step, self.total_steps, metrics, layers))
        return "cancelled" if self.sink.should_stop() else None

    def run_epoch(self, bar: Any) -> str | None:
        """One pass over the training split; returns a terminal status or None."""
        x, y, every = self.data.x_train, self.data.y_train, self.cfg.probe.every_steps
        self.model.train()
        for idx in batches(len(x), self.cfg.train.batch_size, self.device):
            xb, yb = self.prep(x[idx]), y[idx]  # (B, C, H, W), (B,): gathered on the device
            for g in self.opt.param_groups:  # train.schedule, closed form in the step
                g["lr"] = lr_at(self.cfg.train, self.step, self.per_epoch)
            with self.autocast:
                logits = self.model(xb)
                loss = F.cross_entropy(logits, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.probe.step()  # one on-device sum of the BN running buffers
            self.window.add(loss, logits, yb)  # references only, no sync
            self.step += 1
            if bar is not None:
                bar.update(1)
            if self.step % every == 0 or self.step == self.total_steps:
                status = self.probe_now()
                if status:
                    return status
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    cfg: ExperimentConfig | dict,
    sink: MetricSink | None = None,
    *,
    datasets_root: Path | None = None,
    uploads_dir: Path | None = None,
    checkpoint_path: Path | None = None,
    export_dir: Path | None = None,
    progress: bool = False,
    data: Data | None = None,
) -> TrainResult:
    """Train one experiment, streaming probe records to `sink` (docs/design.md: the summary)."""
    t0 = time.perf_counter()
    cfg = validate_config(cfg)
    sink = sink if sink is not None else MemorySink()
    device = resolve_device(cfg.train.device)
    data = (
        data
        or load_dataset(  # standardised on the training device
            cfg.dataset,
            seed=cfg.train.seed,
            device=device,
            datasets_root=datasets_root,
            uploads_dir=uploads_dir,
        )
    ).to(device)
    if cfg.train.batch_size > len(data.x_train):  # one step at chance accuracy otherwise
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is larger than the training split "
            f"({len(data.x_train)} samples after the validation split)"
        )
    run = Run(cfg, data, device, sink)
    run.resume(checkpoint_path)
    sink.on_start(
        device=device_name(device), total_steps=run.total_steps, layer_names=run.probe.names
    )
    status, steps0 = None, run.step
    bar = _progress_bar(run, cfg) if progress else None
    try:
        while run.epoch < cfg.train.epochs and status is None:
            tic = time.perf_counter()
            status = run.run_epoch(bar)
            _sync(device)
            run.train_s += time.perf_counter() - tic
            if status is None and not run.window.finite():  # CPU-GPU sync point (per epoch)
                status = "diverged"
            if status is None:
                run.epoch += 1
                if checkpoint_path is not None:
                    save_checkpoint(checkpoint_path, run.state_dict())
                sink.on_epoch_end(epoch=run.epoch, step=run.step)
    finally:
        if bar is not None:
            bar.close()
    return _finish(run, status or "succeeded", t0, steps0, export_dir)


def _progress_bar(run: Run, cfg: ExperimentConfig) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, initial=run.step, desc=cfg.name, unit="step")


def _finish(run: Run, status: str, t0: float, steps0: int, export_dir: Path | None) -> TrainResult:
    """Final evaluation (for a succeeded run), summary to the sink, optional export."""
    cfg, data, error = run.cfg, run.data, None
    summary: dict[str, Any] = {"device": device_name(run.device), "steps": run.step}
    summary["env"] = environment(run.device)  # torch version, threads, deterministic flags
    if status == "diverged":
        error = f"loss became NaN or infinite by step {run.step} (try a smaller train.lr)"
    elif status == "cancelled":
        error = "cancelled"
    else:
        summary.update(_final_metrics(run))
        if export_dir is not None:
            export_all(run.model, cfg, data, Path(export_dir))
    summary["wall_s"] = time.perf_counter() - t0
    summary["steps_per_s"] = (run.step - steps0) / run.train_s if run.train_s > 0 else None
    run.sink.on_summary(summary)
    return TrainResult(status, error, summary, run.model)


def _final_metrics(run: Run) -> dict[str, Any]:
    cfg, data = run.cfg, run.data
    acc = summary_accuracies(
        run.model,
        data,
        batch_size=run.batch,
        train_mode_sizes=cfg.probe.train_mode_test_batch_sizes,
        recalibrate_samples=cfg.probe.recalibrate_samples if cfg.probe.recalibrate else None,
        train_mode_draws=cfg.probe.train_mode_draws,
    )

    def item(v: torch.Tensor | None) -> float | None:
        return None if v is None else v.item()  # CPU-GPU sync point

    out: dict[str, Any] = {"test_acc_eval": item(acc["test_acc_eval"])}
    # None: undefined (batch of one); the standard error is None for a single draw
    for key in ("test_acc_train_mode", "test_acc_train_mode_se", "test_acc_train_bn"):
        out[key] = {k: item(v) for k, v in acc[key].items()}
    out["test_acc_train_mode_draws"] = acc["test_acc_train_mode_draws"]
    undefined = sorted({k for k, v in out["test_acc_train_mode"].items() if v is None}, key=int)
    if undefined:  # why a size has no train-mode accuracy, beside the nulls
        out["test_acc_train_mode_undefined"] = dict.fromkeys(undefined, UNDEFINED_AT_ONE)
    out["test_acc_recalibrated"] = item(acc.get("test_acc_recalibrated"))
    # Final shift on the whole test set (more samples than a probe's held-out batches).
    run.probe.record(data.x_test, run.batch, fresh_spread=True)
    per_channel, layers = run.probe.last_shift_per_channel, run.probe.last_layers
    out["shift_by_layer"] = {k: v.mean().item() for k, v in per_channel.items()}
    out["shift_per_channel"] = {k: v.tolist() for k, v in per_channel.items()}
    # docs/science.md §1: Li et al.'s statistic, both noise floors, the signed log-ratio quartiles
    for key in ("shift_li", "shift_floor", "shift_li_floor"):
        out[f"{key}_by_layer"] = {k: v[key] for k, v in layers.items()}
    out["shift_log_by_layer"] = {
        k: {q: v[f"shift_log_{q}"] for q in ("q1", "median", "q3")} for k, v in layers.items()
    }
    # docs/science.md §2's prediction per channel, for every BN a closed form covers; the
    # layer's channel mean is compared with `shift`, and the Li et al. statistic of the
    # predicted variances (shift_li_predicted_by_layer) with `shift_li`: each prediction
    # beside the statistic it predicts.
    predicted = (
        _predicted_shifts(run)
        or _weight_path_predictions(run)
        # residual nets, dropout → conv → (residual sum) → BN (docs/science.md §2)
        or residual_predictions(
            run.model, data.x_test, run.cfg.model.dropout, run.probe.last_eval, per_channel=True
        )
    )
    out["shift_predicted_by_layer"] = {k: v.mean().item() for k, v in predicted.items()}
    out["shift_li_predicted_by_layer"] = {
        k: predicted_shift_li(ratio, run.probe.last_eval[k][1]) for k, ratio in predicted.items()
    }
    return out


def predicted_shift_li(ratio: torch.Tensor, eval_var: torch.Tensor) -> float:
    """Li et al.'s layer statistic (docs/science.md §1) of the predicted variances: with the
    predicted training variance ratio_c · eval_var_c per channel, max(a/b, b/a) of the
    channel means a (eval) and b (training, what running_var tracks)."""
    ev = eval_var.double()
    a, b = ev.mean().item(), (ratio.double() * ev).mean().item()
    return shift_li(a, b) or float("nan")


def _predicted_shifts(run: Run) -> dict[str, torch.Tensor]:
    """docs/science.md §2's ratio per channel for each BN whose block puts dropout right before
    it (else absent).

    In eval mode the BN input is the dropout's input, so its measured per-channel mean and
    variance give m2 and μ; the per-layer value is the channel mean, like `shift`. Only the
    first such BN should match `shift`: deeper ones also inherit the shift of the layers above.
    """
    block, drop = run.cfg.model.block, run.cfg.model.dropout
    spec = getattr(run.model, "spec", None)  # residual nets: the BNs the spec puts after dropout
    if spec is not None:
        after_drop = {b.name for b in spec.bn_layers if b.dropout_before}
        return {
            name: predicted_shift(drop.kind, drop.rate, m, v)
            for name, (m, v) in run.probe.last_eval.items()
            if name in after_drop
        }
    if not (
        "dropout" in block
        and "batchnorm" in block
        and block.index("batchnorm") == block.index("dropout") + 1
    ):
        return {}
    return {
        name: predicted_shift(drop.kind, drop.rate, m, v)
        for name, (m, v) in run.probe.last_eval.items()
    }


def _weight_path_predictions(run: Run) -> dict[str, torch.Tensor]:
    """docs/science.md §2 (through the weights) for blocks ordered dropout → linear/conv → BN:
    per output channel 1 + σ²·Σ w² E[x²] / Var_eval(h), from the dropout's eval-mode input
    (hooked on a pass over the test set) and the measured variance of the BN input.

    Linear: Σ_i w_i² E[x_i²] with E[x_i²] per input feature. Conv: E_{n,p}[conv(x², w²)], the
    conv of the squared input with the squared kernel at the layer's stride and padding,
    averaged over samples and output positions (bnlab/engine/shiftpredict.py): a tap on the
    zero padding adds nothing, so the border is exact (ignoring it overstated the added
    variance of a 3×3 conv on an 8×8 map by ~16 %)."""
    block, model = run.cfg.model.block, run.model
    weight = "linear" if "linear" in block else "conv"
    order = [k for k in block if k in ("dropout", weight, "batchnorm")]
    if getattr(model, "spec", None) is not None or order != ["dropout", weight, "batchnorm"]:
        return {}
    if block.index(weight) != block.index("dropout") + 1:
        return {}  # something (an activation) between dropout and the weight: not this form
    if block.index("batchnorm") != block.index(weight) + 1:
        return {}
    noise_var = noise_moments(run.cfg.model.dropout.kind, run.cfg.model.dropout.rate)[1]
    layers = {
        f"blocks.{i}.bn": getattr(b, WEIGHT_LAYER[model.arch])  # the block's linear or conv
        for i, b in enumerate(model.blocks)
        if f"blocks.{i}.bn" in run.probe.last_eval
    }
    if weight == "conv":
        extra = extra_variance(model, run.data.x_test, layers, noise_var)
        return {
            name: 1 + extra[name] / run.probe.last_eval[name][1].double().clamp_min(1e-12)
            for name in layers
            if name in extra
        }
    sums: dict[str, list] = {}

    def hook(name: str):
        def pre(_module: nn.Module, args: tuple) -> None:
            x = args[0]
            s = sums.setdefault(name, [0.0, 0])
            s[0] = s[0] + (x.double() ** 2).sum(0)
            s[1] += x.shape[0]

        return pre

    handles = [lin.register_forward_pre_hook(hook(n)) for n, lin in layers.items()]
    try:
        predict_logits(model, run.data.x_test)  # eval mode: dropout is the identity
    finally:
        for h in handles:
            h.remove()
    return {
        name: predicted_shift_through_weight(
            lin.weight, sums[name][0] / sums[name][1], run.probe.last_eval[name][1], noise_var
        )
        for name, lin in layers.items()
        if name in sums
    }
