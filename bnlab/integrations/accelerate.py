"""bnlab as an Accelerate tracker: `Accelerator(log_with=BnlabTracker(...))`.

    tracker = BnlabTracker("resnet18, p=0.3", every=20, project="cifar")
    accelerator = Accelerator(log_with=tracker)
    accelerator.init_trackers("cifar", config={"lr": 0.1})        # the run's config
    model, opt, train_dl, val_dl = accelerator.prepare(model, opt, train_dl, val_dl)
    tracker.watch(model, val_dl, optimizer=opt)   # the user's validation data; DDP unwrapped
    for x, y in train_dl:                         # each optimizer step is counted by a hook
        ...; accelerator.backward(loss); opt.step(); opt.zero_grad()
        tracker.step(loss=loss)                   # or only values: counted already
    accelerator.log({"val/acc": acc}, step=tracker.step_count)
    accelerator.end_training()                    # ends the run

Accelerate calls a tracker on the main process only; watch / step / evaluate / note do nothing
on the others, so the script is the same on every rank and the job makes one run. With
watch(optimizer=...) a step post hook on the optimizer counts steps (an AMP step skipped for
an inf gradient is not one; under accumulate() only the real steps are); tracker.step(**values)
then adds the values to the step just counted. Without it, call tracker.step() once per
optimizer step, as run.step().
"""

from __future__ import annotations

from typing import Any

from accelerate.state import PartialState
from accelerate.tracking import GeneralTracker

import bnlab.sdk.run as bnlab_run
from bnlab.integrations._common import jsonable, log_values


class BnlabTracker(GeneralTracker):
    """See the module docstring. every: probe every this many steps (watch() may say
    otherwise); the other keywords go to bnlab.init (url, token, mode, tags, project, group,
    mirror, alerts, total_steps, ...)."""

    name = "bnlab"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_name: str | None = None, *, every: int = 20, **init_kwargs: Any) -> None:
        super().__init__()
        self.run_name, self.every, self.init_kwargs = run_name, every, init_kwargs
        self.run: bnlab_run.Run | None = None
        self._hook: Any = None
        self._counted = False  # the optimizer hook counted the current step

    @property
    def tracker(self) -> bnlab_run.Run | None:
        return self.run

    @property
    def main(self) -> bool:
        return PartialState().is_main_process

    @property
    def step_count(self) -> int:
        return self.run.step_count if self.run is not None else 0

    def _ensure(self, config: dict[str, Any] | None = None) -> bnlab_run.Run | None:
        if self.run is None and self.main:
            kwargs = dict(self.init_kwargs)
            if config is not None:
                kwargs["config"] = jsonable(config)
            self.run = bnlab_run.init(name=self.run_name, **kwargs)
        return self.run

    def start(self) -> None:  # Accelerate's lazy start; the run waits for its config
        pass

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        if self.run is None:
            self._ensure(values)

    def watch(self, model: Any, held_out: Any, optimizer: Any = None, **watch: Any) -> None:
        """Run.watch on the main process (the module inside DDP is probed); optimizer: count
        each of its steps (AcceleratedOptimizer or a torch optimizer)."""
        run = self._ensure()
        if run is None:
            return
        run.watch(model, held_out, **{"every": self.every, **watch})
        if optimizer is not None:
            inner = getattr(optimizer, "optimizer", optimizer)  # AcceleratedOptimizer
            if self._hook is not None:
                self._hook.remove()
            self._hook = inner.register_step_post_hook(self._stepped)

    def _stepped(self, *_: Any) -> None:
        self.run.step()
        self._counted = True

    def step(self, **values: Any) -> None:
        """One optimizer step with its values (as run.step), or, when the optimizer hook
        counted it already, the values for that step."""
        if self.run is None:
            return
        if self._hook is not None:
            if values:
                log_values(self.run, values, None)
            self._counted = False
        else:
            self.run.step(**values)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """accelerator.log: bnlab's probe columns (loss, lr, epoch, ...) at the current step
        join the probe window; any other name, or any step, is the script's own series."""
        run = self._ensure()
        if run is not None:
            log_values(run, values, step)

    def evaluate(self, model: Any, test_data: Any, **kwargs: Any) -> dict[str, Any]:
        return self.run.evaluate(model, test_data, **kwargs) if self.run is not None else {}

    def note(self, text: str) -> None:
        if self.run is not None:
            self.run.note(text)

    def finish(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.run is not None and self.run.finished is None:
            self.run.finish()
