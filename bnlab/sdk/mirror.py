"""bnlab's diagnostics as scalars in the tracker a team already keeps (issue 23, bridges).

    writer = SummaryWriter("runs/exp1")          # or wandb.init(...), or mlflow.start_run()
    run = bnlab.init(name="exp1", mirror=writer)  # one argument

At every probe: `bnlab/shift/<layer>` and `bnlab/shift_li/<layer>` per BN layer, and the
held-out `bnlab/val_acc`, `bnlab/val_acc_train_mode` and `bnlab/train_mode_gap` (eval minus
train-mode accuracy); at Run.evaluate(): `bnlab/test_acc_eval`, `bnlab/test_acc_train_mode/<b>`,
`bnlab/test_acc_recalibrated` and `bnlab/recalibration_gap` (recalibrated minus eval). Steps
are bnlab's optimizer steps.

The tracker is recognised by what it is, never imported here (the client needs none of them):
a TensorBoard SummaryWriter (torch.utils.tensorboard or tensorboardX: `add_scalar`), a W&B run
(`wandb.init()`'s object: `log` and `define_metric`), an MLflow run (`mlflow.start_run()`'s
ActiveRun, or an MLflow run id as "mlflow:<run id>"). Anything with `scalars(step, values)`
is used as it is.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from bnlab.core.registry import LAYER_KEYS

log = logging.getLogger("bnlab")
PREFIX = "bnlab/"
SHIFT, SHIFT_LI = LAYER_KEYS.index("shift"), LAYER_KEYS.index("shift_li")
HELD_OUT = ("val_acc", "val_acc_train_mode", "val_loss")


class TensorBoard:
    """A SummaryWriter: one add_scalar per value (flushed at close, as the writer does)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.flush()


class Wandb:
    """A W&B run: bnlab's values on their own x axis (`bnlab/step`, declared with
    define_metric, as W&B's Lightning logger does with its global step), so the W&B run's
    own step is never asked to go back."""

    def __init__(self, run: Any) -> None:
        self.run = run
        run.define_metric(f"{PREFIX}step")
        run.define_metric(f"{PREFIX}*", step_metric=f"{PREFIX}step")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({f"{PREFIX}step": step, **values})

    def close(self) -> None:
        pass


class Mlflow:
    """An MLflow run by id: one log_batch per probe through MlflowClient (the run need not be
    the active one; the tracking URI is the one in force when the mirror is made)."""

    def __init__(self, run_id: str, client: Any = None) -> None:
        if client is None:
            from mlflow.tracking import MlflowClient  # optional: only for an MLflow mirror

            client = MlflowClient()
        self.client, self.run_id = client, run_id

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def close(self) -> None:
        pass


def adapt(target: Any) -> Any:
    """The bridge for `target` (see the module docstring); TypeError naming what is accepted."""
    if hasattr(target, "scalars"):
        return target
    if isinstance(target, str) and target.startswith("mlflow:"):
        return Mlflow(target.removeprefix("mlflow:"))
    if hasattr(target, "add_scalar"):
        return TensorBoard(target)
    if hasattr(target, "define_metric") and hasattr(target, "log"):
        return Wandb(target)
    run_id = getattr(getattr(target, "info", None), "run_id", None)
    if isinstance(run_id, str):
        return Mlflow(run_id)
    raise TypeError(
        f"mirror: cannot send scalars to a {type(target).__name__}; give a TensorBoard "
        "SummaryWriter, a W&B run (wandb.init()), an MLflow run (mlflow.start_run()) or "
        "'mlflow:<run id>'"
    )


def _safe(name: str) -> str:
    # W&B and MLflow take letters, digits and _-./ and spaces; module paths are made of those
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name)


def probe_scalars(
    names: list[str], layers: list[list[float | None] | None] | None, metrics: dict[str, Any]
) -> dict[str, float]:
    """One probe's scalars: shift and shift_li per BN layer, the held-out accuracies and the
    eval-minus-train-mode gap (finite values only)."""
    out: dict[str, float] = {}
    for name, row in zip(names, layers or [], strict=False):
        if row is None:
            continue
        for key, i in (("shift", SHIFT), ("shift_li", SHIFT_LI)):
            if _finite(row[i]):
                out[f"{PREFIX}{key}/{_safe(name)}"] = float(row[i])
    for key in HELD_OUT:
        if _finite(metrics.get(key)):
            out[f"{PREFIX}{key}"] = float(metrics[key])
    if _finite(metrics.get("val_acc")) and _finite(metrics.get("val_acc_train_mode")):
        out[f"{PREFIX}train_mode_gap"] = metrics["val_acc"] - metrics["val_acc_train_mode"]
    return out


def summary_scalars(acc: dict[str, Any]) -> dict[str, float]:
    """Run.evaluate()'s accuracies and the recalibration gap (recalibrated minus eval)."""
    out: dict[str, float] = {}
    for key in ("test_acc_eval", "test_acc_recalibrated"):
        if _finite(acc.get(key)):
            out[f"{PREFIX}{key}"] = float(acc[key])
    for key in ("test_acc_train_mode", "test_acc_train_bn"):
        for size, value in (acc.get(key) or {}).items():
            if _finite(value):
                out[f"{PREFIX}{key}/{size}"] = float(value)
    if _finite(acc.get("test_acc_eval")) and _finite(acc.get("test_acc_recalibrated")):
        out[f"{PREFIX}recalibration_gap"] = acc["test_acc_recalibrated"] - acc["test_acc_eval"]
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Mirrors:
    """The bridges of one run; a tracker that fails is warned about once and left out (the
    training loop never stops for a tracker)."""

    def __init__(self, targets: Any) -> None:
        if targets is None:
            targets = []
        elif not isinstance(targets, (list, tuple)):
            targets = [targets]
        self.bridges = [adapt(t) for t in targets]

    def __bool__(self) -> bool:
        return bool(self.bridges)

    def send(self, step: int, values: dict[str, float]) -> None:
        if not values:
            return
        for bridge in list(self.bridges):
            try:
                bridge.scalars(step, values)
            except Exception as exc:  # a tracker's failure is not the training's
                log.warning("bnlab: mirror %s failed (%s); left out", type(bridge).__name__, exc)
                self.bridges.remove(bridge)

    def close(self) -> None:
        for bridge in self.bridges:
            try:
                bridge.close()
            except Exception as exc:
                log.warning("bnlab: mirror %s close failed: %s", type(bridge).__name__, exc)
