"""Webhook alerts from a script's run (issue 23): a JSON POST when the run crashes (ends
`failed`: an exception left the loop), diverges (a non-finite training loss, at the probe that
sees it), or when a BN layer's shift or the eval-vs-recalibrated gap crosses the threshold the
user set.

    run = bnlab.init(alerts="https://hooks.slack.com/services/...")             # crash, diverge
    run = bnlab.init(alerts=Alerts(url, shift_above=2.0, gap_above=0.05))      # and thresholds

The body works with Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat,
Discord's /slack endpoint, Teams workflows): `text` is the one line a person reads; `bnlab`
carries the same as fields for a program ({"event", "run_id", "name", "url", "step", "value",
"threshold", ...}). Each alert is sent once per run and kind (per layer for the shift), from a
background thread: the training loop never waits for a webhook, and a webhook that fails is
logged, never raised. finish() waits up to timeout_s for the alerts still in flight.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("bnlab")
EVENTS = ("failed", "diverged", "shift", "gap")  # what an Alerts may be sent for


@dataclass(frozen=True)
class Alerts:
    """Where and when to alert. on: which of EVENTS without a threshold to send (failed:
    the script raised; diverged: a non-finite loss). shift_above: a BN layer's `shift` at a
    probe above this. gap_above: Run.evaluate()'s recalibrated minus eval-mode accuracy above
    this (0.05 = 5 points)."""

    url: str
    on: tuple[str, ...] = ("failed", "diverged")
    shift_above: float | None = None
    gap_above: float | None = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"alerts: url must be an http(s) URL, got {self.url!r}")
        bad = [e for e in self.on if e not in EVENTS]
        if bad:
            raise ValueError(f"alerts: on= takes {EVENTS}, got {bad}")
        for name in ("shift_above", "gap_above"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"alerts: {name} must be a finite number, got {value!r}")


class Alerter:
    """One run's alerts: which were sent, and the threads still sending."""

    def __init__(self, alerts: Alerts | str | None, describe: Any) -> None:
        self.alerts = Alerts(alerts) if isinstance(alerts, str) else alerts
        self.describe = describe  # () -> {"run_id", "name", "url", "step"} at the moment
        self.sent: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.delivered: list[dict[str, Any]] = []  # what the webhook took (status < 300)

    def __bool__(self) -> bool:
        return self.alerts is not None

    def event(self, kind: str, what: str, **fields: Any) -> None:
        """Send `kind` (once per `fields.get("layer")` for the shift) if it is wanted."""
        if self.alerts is None:
            return
        if kind in ("failed", "diverged") and kind not in self.alerts.on:
            return
        once = f"{kind}:{fields.get('layer', '')}"
        if once in self.sent:
            return
        self.sent.add(once)
        run = self.describe()
        where = f" ({run['url']})" if run.get("url") else ""
        label = f"run {run['run_id']}" if run.get("run_id") is not None else "run"
        text = f"bnlab: {label} '{run['name']}' {what}{where}"
        body = {"text": text, "bnlab": {"event": kind, **run, **fields}}
        t = threading.Thread(target=self._post, args=(body,), name="bnlab-alert", daemon=True)
        t.start()
        self.threads.append(t)

    def probe(self, step: int, names: list[str], shifts: list[float | None], loss: Any) -> None:
        """At a probe: diverged (loss None: the window's mean was not finite) and shifts."""
        if self.alerts is None:
            return
        if loss is None:
            self.event("diverged", f"diverged: training loss not finite by step {step}", step=step)
        limit = self.alerts.shift_above
        if limit is None:
            return
        for name, shift in zip(names, shifts, strict=False):
            if shift is not None and math.isfinite(shift) and shift > limit:
                self.event(
                    "shift",
                    f"BN layer {name}: shift {shift:.3g} above {limit:g} at step {step}",
                    layer=name,
                    value=shift,
                    threshold=limit,
                    step=step,
                )

    def evaluated(self, acc: dict[str, Any]) -> None:
        if self.alerts is None or self.alerts.gap_above is None:
            return
        ev, rc = acc.get("test_acc_eval"), acc.get("test_acc_recalibrated")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (ev, rc)):
            return
        gap, limit = rc - ev, self.alerts.gap_above
        if gap > limit:
            self.event(
                "gap",
                f"recalibrating BN gains {100 * gap:.1f} points of accuracy "
                f"({100 * ev:.1f}% eval, {100 * rc:.1f}% recalibrated; threshold "
                f"{100 * limit:.1f})",
                value=gap,
                threshold=limit,
            )

    def _post(self, body: dict[str, Any]) -> None:
        try:
            resp = httpx.post(self.alerts.url, json=body, timeout=self.alerts.timeout_s)
            if resp.status_code >= 300:
                log.warning("bnlab: alert webhook answered %s: %s", resp.status_code, resp.text)
            else:
                self.delivered.append(body)
        except httpx.HTTPError as exc:
            log.warning("bnlab: alert webhook %s failed: %s", self.alerts.url, exc)

    def wait(self, timeout_s: float) -> None:
        for t in self.threads:
            t.join(timeout_s)
        self.threads = [t for t in self.threads if t.is_alive()]
