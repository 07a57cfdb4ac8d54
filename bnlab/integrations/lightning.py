"""bnlab in a Lightning Trainer: `Trainer(callbacks=[BnlabCallback()])`.

Works with `lightning` (lightning.pytorch) and `pytorch_lightning` 2.x, whichever is installed
(both: the callback is both kinds). On the global-zero rank only, it makes the run at fit start
(name, the module's hparams as config, total_steps from the trainer's estimate), watches the
LightningModule on a held-out batch (given, else the first batches of the user's own
validation data, else, with a note, the first training batch), counts optimizer steps (not
accumulation micro-batches) with the training loss, learning rate and epoch, logs what the
module logged at each validation epoch end (trainer.callback_metrics, as `lightning/<name>`),
and ends the run with the fit: succeeded, failed (an exception), cancelled (Ctrl-C, SIGTERM,
or Cancel in the dashboard, which stops the fit gracefully).

mirror="loggers" also sends bnlab's diagnostics to the trainer's own TensorBoard, W&B and
MLflow loggers (bnlab.sdk.mirror).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bnlab.sdk.run as bnlab_run
from bnlab.integrations._common import jsonable, log_values, scalar
from bnlab.sdk.mirror import Mlflow

_BASES: list[type] = []
try:
    from lightning.pytorch import Callback as _LightningCallback

    _BASES.append(_LightningCallback)
except ImportError:  # pragma: no cover - one of the two is installed
    pass
try:
    from pytorch_lightning import Callback as _PlCallback

    _BASES.append(_PlCallback)
except ImportError:  # pragma: no cover
    pass
if not _BASES:  # pragma: no cover
    raise ImportError("bnlab.integrations.lightning needs lightning or pytorch_lightning 2.x")


class BnlabCallback(*_BASES):  # type: ignore[misc]
    """See the module docstring. held_out: a tensor batch, an (x, y) pair, or an iterable of
    them (default: the user's validation data); every / train_mode_every / detect: as
    Run.watch; the other keywords go to bnlab.init (url, token, mode, tags, project, group,
    mirror, alerts, ...); name defaults to the module's class name."""

    def __init__(
        self,
        held_out: Any = None,
        *,
        every: int = 20,
        name: str | None = None,
        max_held_out: int = 256,
        train_mode_every: int = 5,
        detect: bool = True,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self.held_out, self.every, self.name = held_out, every, name
        self.max_held_out, self.train_mode_every, self.detect = (
            max_held_out,
            train_mode_every,
            detect,
        )
        self.init_kwargs = init_kwargs
        self.run: bnlab_run.Run | None = None
        self._pending: list[Any] = []  # validation batches gathered for the held-out set
        self._seen = 0
        self._global_step = -1

    # ------------------------------------------------------------------ start
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or self.run is not None:
            return
        kwargs = dict(self.init_kwargs)
        if kwargs.get("mirror") == "loggers":
            kwargs["mirror"] = _logger_mirrors(trainer)
        config = kwargs.pop("config", None)
        if config is None:
            config = jsonable(dict(getattr(pl_module, "hparams", {}) or {}))
        total = trainer.estimated_stepping_batches
        total = int(total) if isinstance(total, (int, float)) and 0 < total < 2**31 else None
        kwargs.setdefault("total_steps", total)
        # Cancel in the dashboard stops the fit gracefully (trainer.should_stop), not by an
        # exception out of a callback.
        kwargs.setdefault("raise_on_cancel", False)
        self.run = bnlab_run.init(
            name=self.name or type(pl_module).__name__, config=config, **kwargs
        )
        self._global_step = trainer.global_step
        if self.held_out is not None:
            self._watch(pl_module, self.held_out)

    def _watch(self, pl_module: Any, held_out: Any) -> None:
        self.run.watch(
            pl_module,
            held_out,
            every=self.every,
            max_held_out=self.max_held_out,
            train_mode_every=self.train_mode_every,
            detect=self.detect,
        )
        self.held_out = held_out

    @property
    def watching(self) -> bool:
        return self.run is not None and self.run.probe is not None

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """The user's own validation batches (the sanity check's included) become the
        held-out set, up to max_held_out samples."""
        if self.run is None or self.watching or dataloader_idx != 0:
            return
        self._pending.append(_detached(batch))
        self._seen += _batch_len(batch)
        if self._seen >= self.max_held_out:
            self._watch(pl_module, self._pending)
            self._pending = []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.run is not None and not self.watching and self._pending:
            self._watch(pl_module, self._pending)  # fewer samples than max_held_out: all
            self._pending = []

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.run is None or self.watching:
            return
        if self._pending:
            self._watch(pl_module, self._pending)
            self._pending = []
            return
        # No validation before training (num_sanity_val_steps=0, or none at all): the
        # module's own val_dataloader if it has one, else this training batch, said so.
        held = _val_batches(trainer, pl_module, self.max_held_out)
        if held:
            self._watch(pl_module, held)
        else:
            self._watch(pl_module, _detached(batch))
            self.run.note(
                "no validation data was given: the held-out batch is the first training "
                "batch, so val_acc / val_loss are measured on data the model trains on"
            )

    # ------------------------------------------------------------------ the loop
    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.run is None or trainer.global_step == self._global_step:
            return  # not rank zero, or a gradient-accumulation micro-batch
        done = trainer.global_step - self._global_step
        self._global_step = trainer.global_step
        metrics: dict[str, Any] = {"epoch": trainer.current_epoch}
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and scalar_like(loss):
            metrics["loss"] = loss
        if trainer.optimizers:
            metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        for _ in range(done - 1):  # several optimizer steps in one batch (manual optimization)
            self.run.step()
        self.run.step(**metrics)
        if self.run.should_stop:
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.run is None or trainer.sanity_checking:
            return
        log_values(self.run, dict(trainer.callback_metrics), None, prefix="lightning/")

    # ------------------------------------------------------------------ the end
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.run is not None and self.run.finished is None:
            # the same ends as `with run:` (cancelled for Ctrl-C / SIGTERM, failed otherwise)
            self.run.__exit__(type(exception), exception, exception.__traceback__)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.run is not None and self.run.finished is None:
            self.run.finish()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self.on_fit_end(trainer, pl_module)


def scalar_like(value: Any) -> bool:
    return scalar(value) is not None if not hasattr(value, "numel") else value.numel() == 1


def _detached(batch: Any) -> Any:
    """A batch kept for later: tensors detached (a validation batch may be reused by the
    loader's pinned buffers: cloned)."""
    if hasattr(batch, "detach"):
        return batch.detach().clone()
    if isinstance(batch, Mapping):
        return {k: _detached(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_detached(v) for v in batch]
    return batch


def _batch_len(batch: Any) -> int:
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return next((_batch_len(v) for v in batch.values() if hasattr(v, "shape")), 0)
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    return 0


def _val_batches(trainer: Any, pl_module: Any, limit: int) -> list[Any]:
    """The first validation batches of the user's own validation data, read before the
    trainer does: what fit(val_dataloaders=) was given (the trainer's data source for its
    validation loop; a private attribute, so tried first and quietly), else the datamodule's
    or the module's val_dataloader()."""
    val_loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "val_loop", None)
    source = getattr(val_loop, "_data_source", None)
    makers = []
    if source is not None and getattr(source, "is_defined", lambda: False)():
        makers.append(source.dataloader)
    for owner in (getattr(trainer, "datamodule", None), pl_module):
        if getattr(owner, "val_dataloader", None) is not None:
            makers.append(owner.val_dataloader)
    for make in makers:
        try:
            loader = make()
        except Exception:  # not implemented (Lightning's default raises), or needs setup
            continue
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if loader is None:
            continue
        out, n = [], 0
        for batch in loader:
            out.append(_detached(batch))
            n += _batch_len(batch)
            if n >= limit:
                break
        if out:
            return out
    return []


def _logger_mirrors(trainer: Any) -> list[Any]:
    """The trainer's TensorBoard, W&B and MLflow loggers as mirror targets."""
    out: list[Any] = []
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "MLFlowLogger":
            out.append(Mlflow(logger.run_id, client=logger.experiment))
        elif kind in ("TensorBoardLogger", "WandbLogger"):
            out.append(logger.experiment)
    return out
