"""bnlab.init and Run: bnlab's probe in a user's own training loop, streamed to a bnlab server.

    run = bnlab.init(name="resnet18, p=0.3", config={"lr": 0.1}, total_steps=len(loader) * 10)
    run.watch(model, held_out=x_val, every=20)
    with run:                            # an exception ends it failed, Ctrl-C cancelled
        for x, y in loader:
            ...; opt.step()
            run.step(loss=loss.detach())  # raises bnlab.Cancelled after Cancel in the dashboard
        run.finish(test_acc=0.93)

The hot path, run.step(), keeps references to the values it is given and adds the BN running
buffers into an on-device sum; it never reads a value back to the host. Every `every` steps
the window is reduced (one host sync), the probe measures every BN layer on the held-out batch,
and one record is appended to the spool file, which the sender thread sends
(bnlab/sdk/transport.py).
torch is imported only by watch() and evaluate(): `import bnlab` and `bnlab sync` need none.

Progress: with init(total_steps=N) the server shows step / N while the run runs (from the probes
and from the heartbeats, which carry the loop's step count); 100 % once it has succeeded.

Cancel from the dashboard: the server's answers to the sender thread's requests (points about
once a second while probes come, else a heartbeat every heartbeat_s) say so; the sender sets
run.should_stop, and the next run.step() raises bnlab.Cancelled (a KeyboardInterrupt, so it
stops the loop like Ctrl-C and gets through `except Exception`). `with run:` or the exit hook
then ends the run `cancelled`, after the last partial window is probed and the spool is sent.
init(raise_on_cancel=False): step() never raises; the loop reads run.should_stop itself (say,
to save a checkpoint first) and finish() ends the run `cancelled`. Neither reads the device or
touches the network on the training thread: should_stop is a flag the sender thread sets.

SIGTERM (systemd, docker, Slurm, Kubernetes) ends the run as Ctrl-C does: init() puts a handler
on it in the main thread (chaining the one the user or a framework installed before, put back
when the last run finishes); the loop stops with bnlab.sdk.run.Terminated (a KeyboardInterrupt),
or however the chained handler decides, and the run ends `cancelled` "terminated by SIGTERM"
with every spooled point sent.
"""

from __future__ import annotations

import atexit
import logging
import math
import numbers
import os
import re
import secrets
import shlex
import signal
import socket
import sys
import threading
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bnlab.core.registry import LAYER_KEYS, METRIC_KEYS, METRIC_NAME_PATTERN
from bnlab.sdk.alerts import Alerter, Alerts
from bnlab.sdk.mirror import Mirrors, probe_scalars, summary_scalars
from bnlab.sdk.transport import (
    Client,
    Rejected,
    Sender,
    Spool,
    Unreachable,
    held_key,
    resume_run,
)

log = logging.getLogger("bnlab")
# What a user is likely to call a run-level value, to the column the dashboard plots.
ALIASES = {"loss": "train_loss", "acc": "train_acc", "accuracy": "train_acc"}
LAST_VALUE = ("lr", "epoch")  # these are read at the probe step, the others averaged
ENDS = ("succeeded", "failed", "cancelled", "diverged")
MAX_STEP = 2**31 - 1  # the server's steps are 32-bit integers
CANCELLED_ERROR = "cancelled from the dashboard"
SHOWN = ("train_loss", "train_acc", "val_loss", "val_acc")  # on the progress line, per probe
# What the server takes as the name of a script's own metric (backend/crud/script_runs.py,
# EXTRA_KEY): checked here so a bad name is refused at run.log(), not with a whole batch.
METRIC_NAME = re.compile(METRIC_NAME_PATTERN)
MAX_LOG_KEYS = 64  # the server's limit of own names per record: more are split over records
SHIFT_AT = LAYER_KEYS.index("shift")


def say(text: str) -> None:
    """One line for the person running the script, on stderr (above the progress bar, if
    one is drawn). Not through logging: a script that configured logging for its own
    messages still sees where its run is."""
    try:
        from tqdm import tqdm

        tqdm.write(f"bnlab: {text}", file=sys.stderr)
    except ImportError:
        print(f"bnlab: {text}", file=sys.stderr, flush=True)


def _progress_bar(enabled: bool | None, total: int | None, start: int, run_id: int | None) -> Any:
    """The progress line (tqdm on stderr): step / total_steps, steps per second, and the last
    probe's losses and accuracies. enabled None: only when stderr is a terminal (a batch job's
    log file gets no carriage-return updates); False: never; True: always. None when tqdm is
    missing (it comes with bnlab's worker extra; `pip install tqdm`)."""
    asked = enabled is True
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        if asked:
            say("progress=True draws its line with tqdm, which is not installed: pip install tqdm")
        return None
    return tqdm(
        total=total,
        initial=start,
        desc=f"bnlab run {run_id}" if run_id is not None else "bnlab",
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )


class Cancelled(KeyboardInterrupt):
    """Raised by run.step() once a Cancel pressed in the dashboard reached this client.

    A KeyboardInterrupt, as Ctrl-C is: a person asked the loop to stop, it is no error. So
    `except Exception` in the loop does not swallow it, code that already saves a checkpoint on
    Ctrl-C does so on a dashboard cancel too, and `with run:` (or, without it, the exit hook)
    ends the run `cancelled` after sending every spooled point. Uncaught, the script prints
    this one line (no traceback) and exits with status 1.
    """

    def __init__(self, run_id: int | None, step: int) -> None:
        super().__init__(f"bnlab: run {run_id} was {CANCELLED_ERROR} (stopped at step {step})")
        self.run_id, self.step = run_id, step


class BnlabWarning(UserWarning):
    """What bnlab tells the script about its run (a model with nothing to probe, a mode
    mistake in the loop); each is also a note in the run's summary (`summary.notes`), shown
    on the run page."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM (what systemd, docker, Slurm and Kubernetes send)
    reaches a script that installed no SIGTERM handler of its own: the script stops as on
    Ctrl-C (its `except KeyboardInterrupt` and `finally` blocks run), `with run:` or the exit
    hook ends the run `cancelled` "terminated by SIGTERM" after sending every spooled point,
    and the script prints one line and exits with status 1. A handler the user or a framework
    installed before bnlab.init() is called instead, and decides how the script stops; the run
    still ends `cancelled` with that reason."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"bnlab: {_signal_reason(signum)}")
        self.signum = signum


def _total_steps(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"total_steps must be a positive int, got {type(value).__name__}")
    if not 1 <= int(value) <= MAX_STEP:
        raise ValueError(f"total_steps must be a positive int (at most {MAX_STEP}), got {value}")
    return int(value)


def spool_dir() -> Path:
    return Path(os.environ.get("BNLAB_SPOOL_DIR") or Path.home() / ".bnlab" / "spool")


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


class Run:
    """One run of a user's script. Make it with bnlab.init(); see the module docstring."""

    def __init__(
        self,
        *,
        name: str,
        config: dict[str, Any] | None,
        tags: list[str] | None,
        url: str | None,
        token: str | None,
        mode: str,
        resume: int | None,
        start_step: int | None,
        directory: Path | None,
        timeout_s: float,
        heartbeat_s: float,
        total_steps: int | None = None,
        raise_on_cancel: bool = True,
        progress: bool | None = None,
        project: str | None = None,
        group: str | None = None,
        mirror: Any = None,
        alerts: Alerts | str | None = None,
    ) -> None:
        if mode not in ("online", "offline"):
            raise ValueError(f"mode must be 'online' or 'offline', got {mode!r}")
        self.total_steps = _total_steps(total_steps)
        self.raise_on_cancel = bool(raise_on_cancel)
        url = url or os.environ.get("BNLAB_URL")
        token = token or os.environ.get("BNLAB_API_TOKEN")
        self.offline = mode == "offline" or not url
        self.name, self.config, self.tags = name, dict(config or {}), list(tags or [])
        self._place(project, group)
        self.mirrors = Mirrors(mirror)
        self.alerter = Alerter(alerts, self._describe)
        self.key = secrets.token_urlsafe(32)  # this process's secret for its run
        self._id: int | None = None
        self.url = None if self.offline else url.rstrip("/")
        self.step_count = 0
        self.every = 20
        self.probe = None
        self.cancel_requested = False  # set by the sender thread: Cancel in the dashboard
        self.finished: str | None = None
        self.notes: list[str] = []  # summary.notes: what the run page tells a person
        self._bar: Any = None  # the progress line, once the run is under way
        self._signals_before = len(_signalled)  # a SIGTERM an earlier run ended on is not ours
        self._window: dict[str, list[Any]] = {}
        self._last_probe = 0
        self._diverged_at: int | None = None
        self._lock = threading.Lock()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.spool_path = (directory or spool_dir()) / f"run-{stamp}-{self.key[:8]}.jsonl"
        self.spool = Spool(self.spool_path)
        client = None if self.offline else Client(self.url, token)
        # Only when given: a server older than total_steps refuses unknown fields.
        plan = {} if self.total_steps is None else {"total_steps": self.total_steps}
        if resume is not None:
            self._resume_header(client, int(resume), start_step, plan)
        else:
            self.step_count = int(start_step or 0)
            self.spool.append(
                {
                    "type": "run",
                    "key": self.key,
                    "name": name,
                    "config": self.config,
                    "tags": self.tags,
                    "host": socket.gethostname(),
                    "device": None,
                    "started_at": datetime.now(timezone.utc).isoformat(),
                    **plan,
                }
            )
        self._last_probe = self.step_count
        self.sender = Sender(
            self.spool,
            client,
            heartbeat_s=heartbeat_s,
            on_cancel=self._on_cancel,
            step_of=self._step_of,
        )
        self.sender.start()
        if client is not None and resume is None:
            if self.sender.created.wait(timeout_s):
                self._id = self.sender.state.run_id
            else:
                say(
                    f"{self.url} did not answer in {timeout_s:.0f} s; spooling to "
                    f"{self.spool_path} (sent when it is back, or with: {self.sync_command})"
                )
        if self.offline:
            say(f"offline: spooling to {self.spool_path}\n  send it with: {self.sync_command}")
        elif self.link is not None:
            what = f"resumed at step {self.step_count}" if resume is not None else "started"
            say(f"run {self.id} {what}: {self.link}")
        self._bar = _progress_bar(progress, self.total_steps, self.step_count, self.id)
        _live.add(self)

    @property
    def terminated_by(self) -> int | None:
        """The stop signal (SIGTERM) received since this run started, if any."""
        later = _signalled[self._signals_before :]
        return later[0] if later else None

    @property
    def sync_command(self) -> str:
        """The exact command that sends this run's spool to a server (after an offline run, or
        when the server was away)."""
        cmd = f"bnlab sync {shlex.quote(str(self.spool_path))}"
        if self.url and self.url != os.environ.get("BNLAB_URL", "").rstrip("/"):
            cmd += f" --url {shlex.quote(self.url)}"
        return cmd

    def _place(self, project: str | None, group: str | None) -> None:
        """project / group: tags `project:NAME` / `group:NAME` (the runs table filters by tag)
        and config.bnlab.project / .group (it groups by any config path)."""
        where = {}
        for field, value in (("project", project), ("group", group)):
            if value is None:
                continue
            if not isinstance(value, str) or not 0 < len(value) <= 56 or "\x00" in value:
                raise ValueError(f"{field} must be a name of 1-56 characters, got {value!r}")
            where[field] = value
            tag = f"{field}:{value}"
            if tag not in self.tags:
                self.tags.append(tag)
        if where:
            own = self.config.get("bnlab")
            if own is not None and not isinstance(own, dict):
                raise ValueError("config['bnlab'] is where bnlab keeps project/group: not a dict")
            self.config["bnlab"] = {**(own or {}), **where}

    def _describe(self) -> dict[str, Any]:  # what an alert says about the run
        return {"run_id": self.id, "name": self.name, "url": self.link, "step": self.step_count}

    def _resume_header(
        self, client: Client | None, run_id: int, start_step: int | None, plan: dict[str, int]
    ) -> None:
        """Continue run `run_id`: the server learns this process's key now (so the points that
        follow are accepted) and says where the run stopped."""
        # The right to continue: one of the run's keys, kept when this machine created it
        # (transport.held_key); the spool keeps it too, for `bnlab sync` of an offline resume.
        held = held_key(self.spool_path.parent, self.url, run_id)
        proof = {} if held is None else {"held_key": held}
        self.spool.append({"type": "resume", "run_id": run_id, "key": self.key, **proof, **plan})
        self._id = run_id
        if client is None:
            if start_step is None:
                raise ValueError(
                    "resume offline: give start_step (the server cannot tell where the run stopped)"
                )
            self.step_count = int(start_step)
            return
        try:
            run = resume_run(client, run_id, self.key, plan, held)
        except (Rejected, Unreachable) as exc:
            self.spool.close()
            raise RuntimeError(f"bnlab: cannot resume run {run_id}: {exc}") from None
        self.name = run["name"]
        self.step_count = int(run["step"] if start_step is None else start_step)

    # ------------------------------------------------------------------ the loop
    def watch(
        self,
        model: Any,
        held_out: Any,
        every: int = 20,
        *,
        batch_size: int | None = None,
        max_held_out: int = 256,
        train_mode_every: int = 5,
        detect: bool = True,
    ) -> Run:
        """Measure every BN layer of `model` every `every` steps on `held_out` (a tensor batch,
        an (x, y) pair, or an iterable of either; at most max_held_out samples are kept).
        With labels, val_loss / val_acc are recorded too, and val_acc_train_mode (a real
        model.train() pass over the held-out batch, as costly as the probe's own pass) at the
        first probe and one in train_mode_every after it, at init(total_steps=)'s last step and
        at finish()'s final partial window, null at the others (as the engine's
        probe.train_mode_every; 1 = every probe). batch_size: samples per training batch
        (default: read from the first training forward). Call it after moving the model to
        its device. A DDP / DataParallel / compiled model is probed through the module inside.

        detect: watch the loop for mode mistakes (bnlab.sdk.probe.ModeCheck): an evaluation
        under torch.no_grad with BN in train mode or dropout active, BN statistics that never
        move while training, train-mode BN on batches of 1 or mostly under 8; each a warning
        now and a note on the run."""
        try:  # torch is the user's, never a dependency of the client: imported when used
            from bnlab.sdk.probe import ModeCheck, ModelProbe, as_batch
        except ModuleNotFoundError as exc:
            if exc.name != "torch":
                raise
            raise ImportError(
                "Run.watch measures a PyTorch model and needs torch, which is not installed "
                "here: pip install torch (any version from 2.1)"
            ) from exc

        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if isinstance(train_mode_every, bool) or int(train_mode_every) != train_mode_every:
            raise ValueError(f"train_mode_every must be a whole number, got {train_mode_every!r}")
        if train_mode_every < 1:
            raise ValueError(f"train_mode_every must be >= 1, got {train_mode_every}")
        if self.probe is not None:
            self.probe.detach()
        device = next((p.device for p in model.parameters()), None)
        x, y = as_batch(held_out, max_held_out, device)
        self.probe = ModelProbe(model, x, y, batch_size)
        self.every = int(every)
        self.train_mode_every, self._probes = int(train_mode_every), 0
        self.sender.put(
            {"type": "watch", "layer_names": self.probe.names, "layer_keys": list(LAYER_KEYS)}
        )
        for text in self.probe.notes():
            self.note(text, stacklevel=3)
        if detect:
            self.probe.check = ModeCheck(self.probe.model, self.probe.units, self.note)
        self._watched_at = self.step_count
        return self

    def note(self, text: str, *, warn: bool = True, stacklevel: int = 2) -> None:
        """Add a note to the run: kept in its summary (`summary.notes`, a list of strings, sent
        at finish) and shown on the run page; warn: also a BnlabWarning in the script now.
        The same text twice is kept once."""
        text = str(text).replace("\x00", "")[:2000]
        if text in self.notes:
            return
        self.notes.append(text)
        if warn:
            warnings.warn(f"bnlab: {text}", BnlabWarning, stacklevel=stacklevel)

    def step(self, **metrics: Any) -> None:
        """After each optimizer step: advances the step count and keeps the given scalars
        (tensors by reference, no host sync). loss → train_loss, acc → train_acc; lr and
        epoch keep their last value, the others are averaged over the probe window.

        Raises bnlab.Cancelled (after counting this step) once someone pressed Cancel on the
        run in the dashboard, unless init(raise_on_cancel=False): see `should_stop`."""
        if self.finished is not None:
            raise RuntimeError(f"bnlab: run already finished ({self.finished})")
        if self.probe is not None:
            self.probe.step()
        for key, value in metrics.items():
            if hasattr(value, "detach"):
                value = value.detach()
            self._window.setdefault(ALIASES.get(key, key), []).append(value)
        self.step_count += 1
        if self._bar is not None:
            self._bar.update(1)  # a counter: tqdm draws at most a few times a second
        if self.step_count - self._last_probe >= self.every:
            self._probe_now()
        if self.cancel_requested and self.raise_on_cancel:
            raise Cancelled(self.id, self.step_count)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record values at a step without advancing the training step: per-epoch validation
        results, a learning-rate schedule, anything (W&B's run.log). Nested dicts become
        slash-separated names ({"val": {"acc": x}} is val/acc); names are letters, digits and
        _.-/ (at most 64 characters). Values are read now (a tensor costs one host sync).

        step: default the current training step (the steps run.step() counted). bnlab's own
        probe columns (epoch, train_loss, train_acc, lr, val_loss, val_acc, ...; loss and acc
        as in step()) are the probe's: at the current step they join the probe window as
        run.step()'s values do; at another step, log them under a name of your own."""
        if self.finished is not None:
            raise RuntimeError(f"bnlab: run already finished ({self.finished})")
        if step is None:
            at = self.step_count
        elif isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        elif not 0 <= int(step) <= MAX_STEP:
            raise ValueError(f"step must be in [0, {MAX_STEP}], got {step}")
        else:
            at = int(step)
        own: dict[str, float | None] = {}
        for name, value in _flat(metrics):
            column = ALIASES.get(name, name)
            if column in METRIC_KEYS:
                if at != self.step_count:
                    raise ValueError(
                        f"run.log: {name!r} is a bnlab probe column, recorded at the current "
                        f"step only (step {self.step_count}); log it under your own name "
                        f"(e.g. 'val/{column}') at step {at}"
                    )
                self._window.setdefault(column, []).append(_number(name, value, detach=True))
                continue
            if not METRIC_NAME.match(name):
                raise ValueError(
                    f"run.log: metric name {name!r}: letters, digits and _.-/ only, starting "
                    f"with a letter or _, at most 64 characters"
                )
            own[name] = _finite(_number(name, value))
        names = list(own)
        for i in range(0, len(names), MAX_LOG_KEYS):
            part = {k: own[k] for k in names[i : i + MAX_LOG_KEYS]}
            self.sender.put({"step": at, "metrics": part})
        if own and self.mirrors:
            self.mirrors.send(at, {k: v for k, v in own.items() if v is not None})

    @property
    def should_stop(self) -> bool:
        """True once a Cancel pressed in the dashboard reached this client (within about a
        second while probes are sent, else within heartbeat_s). A flag the sender thread sets:
        reading it costs nothing. Never true offline."""
        return self.cancel_requested

    def _reduce(self) -> dict[str, float | None]:
        """The window's values: tensors stacked and read back together (one sync)."""
        window, self._window = self._window, {}
        out: dict[str, float | None] = {}
        tensors: dict[str, Any] = {}
        for key, values in window.items():
            if key in LAST_VALUE:
                values = values[-1:]
            if all(isinstance(v, (int, float)) for v in values):
                out[key] = _finite(float(sum(values) / len(values)))
            else:
                import torch

                tensors[key] = torch.stack(
                    [torch.as_tensor(v).float().reshape(()).to(_device(values)) for v in values]
                ).mean()
        if tensors:
            import torch

            means = torch.stack(list(tensors.values())).tolist()  # the one host sync
            out.update((k, _finite(v)) for k, v in zip(tensors, means, strict=False))
        return out

    def _probe_now(self, last: bool = False) -> None:
        metrics = self._reduce()
        # A non-finite window mean is sent as null (JSON has no NaN) and ends the run diverged.
        if "train_loss" in metrics and metrics["train_loss"] is None and self._diverged_at is None:
            self._diverged_at = self.step_count
        layers = None
        if self.probe is not None:
            self._probes += 1
            planned_end = self.total_steps is not None and self.step_count >= self.total_steps
            # The first probe too: a script's last step is unknown without total_steps, so a
            # short run would otherwise never measure it.
            train_mode = last or planned_end or (self._probes - 1) % self.train_mode_every == 0
            layers, held = self.probe.record(train_mode=train_mode)
            metrics.update((k, _finite(v)) for k, v in held.items())
            if self.probe.check is not None:
                self.probe.check.check(self.step_count - self._watched_at)
            if self.mirrors:
                self.mirrors.send(self.step_count, probe_scalars(self.probe.names, layers, metrics))
        if self.alerter:
            shifts = [None if row is None else row[SHIFT_AT] for row in layers or []]
            names = self.probe.names if self.probe is not None else []
            loss = metrics.get("train_loss", 0.0)  # absent: no loss logged, nothing to judge
            self.alerter.probe(self.step_count, names, shifts, loss)
        record: dict[str, Any] = {"step": self.step_count, "metrics": metrics}
        if self._bar is not None:
            shown = {k: metrics[k] for k in SHOWN if metrics.get(k) is not None}
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        if layers is not None:
            record["layers"] = layers
        self._last_probe = self.step_count
        self.sender.put(record)

    # ------------------------------------------------------------------ the end
    def evaluate(
        self,
        model: Any,
        test_data: Any,
        *,
        train_data: Any = None,
        train_mode_sizes: tuple[int, ...] = (1, 8, 64),
        max_samples: int = 10_000,
    ) -> dict[str, Any]:
        """The accuracies bnlab's own runs report: eval mode, BN in train mode per test batch
        size, and PreciseBN-recalibrated (when train_data is given). test_data / train_data: an
        (x, y) pair or an iterable of them. The result also goes into the run's summary."""
        from bnlab.sdk.probe import as_batch, summary_accuracies, unwrap

        model = unwrap(model)
        device = next((p.device for p in model.parameters()), None)
        x, y = as_batch(test_data, max_samples, device)
        if y is None:
            raise ValueError("test_data: labels are needed for accuracies (give (x, y) pairs)")
        x_train = None if train_data is None else as_batch(train_data, max_samples, device)[0]
        batch = (self.probe.batch_size if self.probe is not None else None) or 64
        if self.probe is not None:
            with self.probe.own_passes():  # bnlab's passes: not the user's mode mistakes
                out = summary_accuracies(
                    model,
                    x,
                    y,
                    x_train=x_train,
                    batch_size=batch,
                    train_mode_sizes=train_mode_sizes,
                )
        else:
            out = summary_accuracies(
                model, x, y, x_train=x_train, batch_size=batch, train_mode_sizes=train_mode_sizes
            )
        self._evaluated = out
        if self.mirrors:
            self.mirrors.send(self.step_count, summary_scalars(out))
        self.alerter.evaluated(out)
        return out

    def finish(
        self,
        status: str | None = None,
        error: str | None = None,
        timeout_s: float = 30.0,
        **summary: Any,
    ) -> None:
        """End the run: the last partial window is recorded, the probe leaves the model, the
        summary (the keyword arguments, plus what evaluate() found) is sent, and the sender
        gets up to timeout_s to deliver the spool (else it stays there for `bnlab sync`).
        status: default succeeded; diverged after a non-finite loss; cancelled once the
        dashboard's Cancel reached the client (should_stop)."""
        with self._lock:
            if self.finished is not None:
                return
            if status is not None and status not in ENDS:
                raise ValueError(f"status must be one of {ENDS}, got {status!r}")
            if self.step_count > self._last_probe:
                self._probe_now(last=True)
            full: dict[str, Any] = {"steps": self.step_count}
            if self.probe is not None:
                full.update(self.probe.summary())
                self.probe.detach()
                self.probe = None
            full.update(getattr(self, "_evaluated", {}))
            full.update({k: _plain(v) for k, v in summary.items()})
            if self.notes:  # a `notes` the script passed to finish() comes after bnlab's
                theirs = full.get("notes")
                theirs = theirs if isinstance(theirs, list) else [] if theirs is None else [theirs]
                full["notes"] = self.notes + theirs
            if status is None and self.terminated_by:  # SIGTERM, the loop stopped itself
                status, error = "cancelled", error or _signal_reason(self.terminated_by)
            if status is None and self.cancel_requested:
                status, error = "cancelled", error or CANCELLED_ERROR
            if status is None:
                status = "diverged" if self._diverged_at is not None else "succeeded"
            if status == "diverged" and error is None and self._diverged_at is not None:
                error = f"loss became NaN or infinite by step {self._diverged_at}"
            self.finished = status
            if status in ("failed", "diverged"):
                what = "crashed" if status == "failed" else "diverged"
                self.alerter.event(status, f"{what}: {error or status}", error=error)
            self.sender.put({"type": "finish", "status": status, "summary": full, "error": error})
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.mirrors.close()
            if self.alerter:
                self.alerter.wait(self.alerter.alerts.timeout_s)
            sent = self.sender.flush(0.5 if self.offline else timeout_s)
            self.sender.stop()
            self.spool.close()
            if self.sender.client is not None:
                self.sender.client.close()
            if self.offline:
                say(
                    f"run {status}, spooled to {self.spool_path}; send it with: {self.sync_command}"
                )
            elif not sent:
                say(
                    f"could not deliver everything to {self.url}; send the rest with: "
                    f"{self.sync_command}"
                )
            else:
                say(f"run {self.id} {status}: {self.link}")
            _live.discard(self)
            if not _live:
                _restore_signal_handlers()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> bool:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, Cancelled):
            self.finish(status="cancelled", error=CANCELLED_ERROR)
        elif self.terminated_by:  # Terminated, or what the user's own SIGTERM handler raised
            self.finish(status="cancelled", error=_signal_reason(self.terminated_by))
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(status="cancelled", error="interrupted (Ctrl-C)")
        else:
            self.finish(status="failed", error=f"{exc_type.__name__}: {exc}")
        return False  # the exception goes on to the user

    def _on_cancel(self) -> None:  # the sender thread
        self.cancel_requested = True
        log.warning(
            "bnlab: run %s was %s; %s",
            self.id,
            CANCELLED_ERROR,
            "the next run.step() raises bnlab.Cancelled"
            if self.raise_on_cancel
            else "run.should_stop is True",
        )

    def _step_of(self) -> int:  # the sender thread, for its heartbeats
        return self.step_count

    @property
    def id(self) -> int | None:
        """The run's id on the server; None until the server has created it (offline: until
        `bnlab sync`)."""
        return self._id if self._id is not None else self.sender.state.run_id

    @property
    def link(self) -> str | None:
        return f"{self.url}/runs/{self.id}" if self.url and self.id else None

    def __repr__(self) -> str:
        return f"<bnlab.Run id={self.id} step={self.step_count} spool={self.spool_path}>"


def process_rank() -> int:
    """This process's global rank: torch.distributed's once initialised (read only if the
    script imported it), else torchrun's RANK; 0 for a single process."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return max(0, int(os.environ.get("RANK", "0")))
    except ValueError:
        return 0


class RankRun:
    """What bnlab.init() gives a process other than rank 0: the Run's methods, doing nothing
    (no spool, no server, no probe), so one script runs unchanged on every rank and the job
    makes exactly one run. It counts steps, never stops the loop (a cancel reaches rank 0,
    whose exit ends the job under torchrun), and ends when the script does."""

    id = link = spool_path = sync_command = None
    cancel_requested = should_stop = False

    def __init__(self, rank: int) -> None:
        self.rank, self.step_count, self.finished = rank, 0, None
        self.notes: list[str] = []

    def watch(self, *_: Any, **__: Any) -> RankRun:
        return self

    def step(self, **_: Any) -> None:
        self.step_count += 1

    def log(self, *_: Any, **__: Any) -> None:
        pass

    def note(self, *_: Any, **__: Any) -> None:
        pass

    def evaluate(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {}

    def finish(self, status: str | None = None, *_: Any, **__: Any) -> None:
        self.finished = self.finished or status or "succeeded"

    def __enter__(self) -> RankRun:
        return self

    def __exit__(self, *_: Any) -> bool:
        self.finish()
        return False

    def __repr__(self) -> str:
        return f"<bnlab.RankRun rank={self.rank} (rank 0 makes the run)>"


def _device(values: list[Any]) -> Any:
    for v in values:
        if hasattr(v, "device"):
            return v.device
    return "cpu"


def _flat(metrics: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """{"val": {"acc": x}} → [("val/acc", x)]."""
    if not isinstance(metrics, dict):
        raise TypeError(f"run.log takes a dict of name: value, got {type(metrics).__name__}")
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flat(value, f"{name}/")
        else:
            out.append((name, value))
    return out


def _number(name: str, value: Any, detach: bool = False) -> Any:
    """A logged value as a float (tensors read now), or, for the window, a detached tensor."""
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach()
        if detach:
            return value
        if value.numel() != 1:
            raise ValueError(f"run.log: {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if hasattr(value, "item"):  # a NumPy scalar
            return float(value.item())
        raise TypeError(f"run.log: {name!r} must be a number, got {type(value).__name__}")
    return float(value)


def _plain(value: Any) -> Any:
    """Summary values as JSON: tensors and numpy scalars to numbers, non-finite to None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# Runs still open when the interpreter exits are finished: failed if an exception ended the
# script (seen by the excepthook below), else succeeded.
_live: weakref.WeakSet[Run] = weakref.WeakSet()
_uncaught: list[BaseException] = []
_hooked: list[Any] = []  # the excepthook found at the first init(), once installed


# Signals that end a script like Ctrl-C does; each handler found when bnlab put its own.
STOP_SIGNALS = (signal.SIGTERM,)
_saved_handlers: dict[int, Any] = {}
_signalled: list[int] = []  # the stop signals received, in order


def _signal_reason(signum: int) -> str:
    return f"terminated by {signal.Signals(signum).name}"


def _excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
    _uncaught.append(exc)
    if isinstance(exc, (Cancelled, Terminated)):  # a request to stop, not a bug: no traceback
        print(exc, file=sys.stderr)
        return
    _hooked[0](exc_type, exc, tb)


def _on_stop_signal(signum: int, frame: Any) -> None:
    """SIGTERM in the main thread (Python runs signal handlers there, between bytecodes).

    The run is not finished here: the handler may have interrupted run.step() or finish()
    itself. It records the signal, so that however the script now ends (Terminated, the
    SystemExit a user's handler raises, or a framework's own graceful stop) the run ends
    `cancelled` "terminated by SIGTERM" once the loop is out of the way, then hands over:
    to the handler that was there before (chained), else raises Terminated. A second SIGTERM
    while the first is handled with no handler of the user's: the default (the process ends
    at once, as a second Ctrl-C would be expected to; the spool keeps what was written)."""
    again = any(run.terminated_by for run in list(_live))  # one already on its way out
    _signalled.append(signum)
    before = _saved_handlers.get(signum, signal.SIG_DFL)
    if not again:
        runs = ", ".join(str(r.id) for r in list(_live)) or "none open"
        log.warning(
            "bnlab: %s received; ending run %s cancelled", signal.Signals(signum).name, runs
        )
    if callable(before):
        before(signum, frame)
        return
    if again:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


def _install_signal_handlers() -> None:
    """Put _on_stop_signal on SIGTERM, keeping what was there to chain to (and to restore when
    the last open run finishes). Only the main thread may set handlers; an ignored signal
    (SIG_IGN) and a handler not set from Python (getsignal() is None) stay as they are."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_stop_signal or current is None or current == signal.SIG_IGN:
            continue
        _saved_handlers[signum] = current
        signal.signal(signum, _on_stop_signal)


def _restore_signal_handlers() -> None:
    """The handlers bnlab found, back in place once no run is open (unless someone installed
    another since: theirs stays)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, before in list(_saved_handlers.items()):
        if signal.getsignal(signum) is _on_stop_signal:
            signal.signal(signum, before)
        del _saved_handlers[signum]


def _install_hooks() -> None:
    """At the first init() (not at import: `bnlab sync` and notebooks reading runs need none);
    the signal handlers at every init() that finds them gone (restored after the last run)."""
    if not _hooked:
        _hooked.append(sys.excepthook)
        sys.excepthook = _excepthook
        atexit.register(_finish_open_runs)
    _install_signal_handlers()


def _finish_open_runs() -> None:
    for run in list(_live):
        if run.terminated_by:
            reason = _signal_reason(run.terminated_by)
            run.finish(status="cancelled", error=reason, timeout_s=10.0)
        elif _uncaught:
            exc = _uncaught[-1]
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = (
                CANCELLED_ERROR if isinstance(exc, Cancelled) else f"{type(exc).__name__}: {exc}"
            )
            run.finish(status=status, error=error, timeout_s=10.0)
        else:
            run.finish(timeout_s=10.0)


def init(
    name: str | None = None,
    config: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    mode: str = "online",
    resume: int | None = None,
    start_step: int | None = None,
    dir: str | Path | None = None,
    timeout_s: float = 10.0,  # noqa: A002
    heartbeat_s: float = 2.0,
    total_steps: int | None = None,
    raise_on_cancel: bool = True,
    progress: bool | None = None,
    project: str | None = None,
    group: str | None = None,
    mirror: Any = None,
    alerts: Alerts | str | None = None,
    all_ranks: bool = False,
) -> Run | RankRun:
    """Start (or resume) a run of this script.

    total_steps: the optimizer steps the loop plans (e.g. epochs * len(loader)); the dashboard
    then shows step / total_steps as the run's progress (at most 99 % until it succeeds).
    Without it the dashboard shows the last probed step and no percentage. With resume=, a
    new value replaces the plan. raise_on_cancel: run.step() raises bnlab.Cancelled once
    someone pressed Cancel in the dashboard (default); False: check run.should_stop yourself.

    url / token: the server and its API token (default BNLAB_URL / BNLAB_API_TOKEN); with no
    url, or mode="offline", records only go to the spool file (send it with `bnlab sync`).
    resume: a run id to continue (its step count goes on from where the server has it, or
    from start_step). dir: the spool folder (default BNLAB_SPOOL_DIR or ~/.bnlab/spool).
    timeout_s: how long init waits for the server to create the run. heartbeat_s: how often
    a client with no points to send tells the server it is alive and at which step (keep it
    below BNLAB_SCRIPT_TIMEOUT_S); its answer is how a cancel reaches a loop between probes.

    On stderr: the run's dashboard URL (online), or the spool file and the exact `bnlab sync`
    command (offline, or when the server is away), and how the run ended. progress: the
    progress line (tqdm: step / total_steps, steps per second, the last probe's losses and
    accuracies); None (default) draws it only when stderr is a terminal, False never.

    project / group: where the run belongs (tags `project:NAME`, `group:NAME`, and
    config.bnlab.project / .group for the runs table's group-by). mirror: a TensorBoard
    SummaryWriter, a W&B run, an MLflow run (or a list of them) that also gets bnlab's
    diagnostics as scalars (bnlab.sdk.mirror). alerts: a webhook URL, or bnlab.sdk.alerts.Alerts
    with thresholds: a JSON POST (Slack-compatible) when the run crashes or diverges, or a
    shift / the recalibration gap crosses its threshold.

    Distributed (torchrun, DDP, Accelerate, Lightning): only rank 0 makes the run; on the other
    ranks init() returns a RankRun whose methods do nothing (all_ranks=True: one run per rank,
    named and tagged with its rank). The rank comes from torch.distributed once initialised,
    else from the RANK environment variable that torchrun sets.
    """
    name = name or Path(sys.argv[0] or "script").stem or "script"
    rank = process_rank()
    if rank and not all_ranks:
        return RankRun(rank)
    if rank and all_ranks:
        name, tags = f"{name} [rank {rank}]", [*(tags or []), f"rank:{rank}"]
    run = Run(
        name=name,
        config=config,
        tags=tags,
        url=url,
        token=token,
        mode=mode,
        resume=resume,
        start_step=start_step,
        directory=Path(dir) if dir is not None else None,
        timeout_s=timeout_s,
        heartbeat_s=heartbeat_s,
        total_steps=total_steps,
        raise_on_cancel=raise_on_cancel,
        progress=progress,
        project=project,
        group=group,
        mirror=mirror,
        alerts=alerts,
    )
    _install_hooks()
    return run
