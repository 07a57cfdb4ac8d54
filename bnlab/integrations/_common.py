"""What the framework integrations share: JSON-safe configs, metric names the server takes,
and logging a framework's values into a run without clobbering bnlab's probe columns."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from bnlab.core.registry import METRIC_KEYS
from bnlab.sdk.run import ALIASES, METRIC_NAME, Run

_BAD = re.compile(r"[^A-Za-z0-9_.\-/]")
PROBE_COLUMNS = frozenset(METRIC_KEYS) | frozenset(ALIASES)


def jsonable(value: Any, depth: int = 0) -> Any:
    """A framework's config (hparams, TrainingArguments) as JSON: numbers, strings, bools,
    None, lists and dicts kept; anything else (a class, a device, an enum) as its str."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if depth < 8 and isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)


def metric_name(name: str) -> str:
    """A framework's metric name as the server takes it: letters, digits and _.-/ (others
    become _), starting with a letter or _, at most 64 characters."""
    safe = _BAD.sub("_", str(name)) or "_"
    if not re.match(r"[A-Za-z_]", safe):
        safe = f"_{safe}"
    safe = safe[:64]
    assert METRIC_NAME.match(safe)
    return safe


def scalar(value: Any) -> float | None:
    """A framework's logged value as a float, or None when it is no single number."""
    if hasattr(value, "detach"):
        if value.numel() != 1:
            return None
        value = value.detach().item()
    elif hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def log_values(run: Run, values: Mapping[str, Any], step: int | None, prefix: str = "") -> None:
    """values into run at step: at the current step bnlab's probe columns (loss, lr, epoch,
    ...) join the probe window; elsewhere, and for every other name, they are the framework's
    own series (prefix + name). Non-numbers are left out."""
    current = step is None or step == run.step_count
    out: dict[str, float | None] = {}
    for key, value in values.items():
        number = scalar(value)
        if number is None and value is not None:
            continue
        if current and key in PROBE_COLUMNS and not prefix:
            out[key] = number
        else:
            name = metric_name(f"{prefix}{key}")
            if name in PROBE_COLUMNS:  # a probe column at another step: its own series
                name = metric_name(f"logged/{name}")
            out[name] = number
    if out:
        run.log(out, step=None if current else step)
