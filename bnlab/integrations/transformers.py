"""bnlab in a Hugging Face Trainer: `Trainer(..., callbacks=[BnlabCallback()])`.

On the main process only (state.is_world_process_zero): the run is made when training begins
(name: args.run_name, config: the TrainingArguments, total_steps: state.max_steps), the model
is watched on a held-out batch (given, else the first batches of the Trainer's eval data, else,
with a note, of its training data; mapping batches such as {"pixel_values", "labels"} work,
and a ModelOutput's .logits is read), every optimizer step is counted, what the Trainer logs
goes into the run (loss, learning_rate and epoch to bnlab's columns at the step they belong
to, eval_* and the rest under their own names as `hf/<name>`), and the run ends with the
training. BatchNorm models exist there (ResNet, ConvNeXt-V1-style vision models, built from a
config); a model with none gets a clear note on its run instead of an empty run. Cancel in the
dashboard stops training gracefully (control.should_training_stop); an exception out of
train() ends the run failed (bnlab's exit hook), Ctrl-C or SIGTERM cancelled.
"""

from __future__ import annotations

import sys
from typing import Any

from transformers import Trainer, TrainerCallback

import bnlab.sdk.run as bnlab_run
from bnlab.integrations._common import jsonable, log_values

# Trainer log keys that are bnlab's probe columns, when logged at the current step.
HF_COLUMNS = {"loss": "train_loss", "learning_rate": "lr", "epoch": "epoch"}


class BnlabCallback(TrainerCallback):
    """See the module docstring. held_out, every, train_mode_every, detect: as Run.watch; the
    other keywords go to bnlab.init (url, token, mode, tags, project, group, mirror, alerts)."""

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
        self.held_out, self.every, self.name = held_out, every, name
        self.max_held_out, self.train_mode_every, self.detect = (
            max_held_out,
            train_mode_every,
            detect,
        )
        self.init_kwargs = init_kwargs
        self.run: bnlab_run.Run | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero or self.run is not None:
            return
        kwargs = dict(self.init_kwargs)
        kwargs.setdefault("config", jsonable(args.to_sanitized_dict()))
        if state.max_steps and 0 < state.max_steps < 2**31:
            kwargs.setdefault("total_steps", int(state.max_steps))
        kwargs.setdefault("raise_on_cancel", False)  # stopped through control instead
        kwargs.setdefault("start_step", int(state.global_step))  # resumed from a checkpoint
        name = self.name or (args.run_name if args.run_name != args.output_dir else None)
        self.run = bnlab_run.init(name=name or type(kw.get("model")).__name__, **kwargs)
        held, note = self.held_out, None
        if held is None:
            held = _first_batches(_eval_loader(kw.get("eval_dataloader")), self.max_held_out)
            held = held or None
        if held is None:
            held = _first_batches(kw.get("train_dataloader"), self.max_held_out)
            note = (
                "no eval data was given to the Trainer: the held-out batch comes from the "
                "training data, so val_acc / val_loss are measured on data the model trains on"
            )
        self.run.watch(
            kw["model"],
            held,
            every=self.every,
            batch_size=args.per_device_train_batch_size,
            max_held_out=self.max_held_out,
            train_mode_every=self.train_mode_every,
            detect=self.detect,
        )
        if note:
            self.run.note(note)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.run is None:
            return
        while self.run.step_count < state.global_step:
            self.run.step()
        if self.run.should_stop:
            control.should_training_stop = True

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any
    ) -> None:
        if self.run is None or not logs:
            return
        at = int(state.global_step)
        columns = {HF_COLUMNS[k]: v for k, v in logs.items() if k in HF_COLUMNS}
        own = {k: v for k, v in logs.items() if k not in HF_COLUMNS}
        if columns and at == self.run.step_count:
            log_values(self.run, columns, None)
        else:
            own.update({k: v for k, v in logs.items() if k in HF_COLUMNS})
        log_values(self.run, own, at, prefix="hf/")

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.run is not None and self.run.finished is None:
            self.run.finish()


def _eval_loader(given: Any) -> Any:
    """The Trainer's eval data: the callback's own argument when the Trainer passes it, else
    from the Trainer that is calling (on_train_begin gets no eval loader, and a callback is
    given no Trainer): found on the call stack, its get_eval_dataloader() used."""
    if given is not None:
        return given
    frame = sys._getframe(1)
    while frame is not None:
        caller = frame.f_locals.get("self")
        if isinstance(caller, Trainer):
            if caller.eval_dataset is None:
                return None
            return caller.get_eval_dataloader()
        frame = frame.f_back
    return None


def _first_batches(loader: Any, limit: int) -> list[Any]:
    if loader is None:
        return []
    out, n = [], 0
    for batch in loader:
        out.append(batch)
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        n += len(first)
        if n >= limit:
            break
    return out
