"""ProbeRecord: what the engine measures at one probe step, and what ingest stores.

Defined here, in the torch-free core, so the engine (bnlab/engine/sinks.py re-exports it)
and the backend's ingest (backend/crud/ingest.py) share one type: ingest reads its attributes
by name, with no dict-or-object guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProbeRecord:
    """Everything measured at one probe step."""

    step: int  # optimizer steps done so far (global, across epochs)
    total_steps: int  # planned optimizer steps for the whole run (progress = step / total_steps)
    metrics: dict[str, float]  # registry METRIC_KEYS (epoch, train_loss, ..., grad_cos)
    # one dict per reported layer: index, name and every registry LAYER_KEYS entry
    layers: list[dict[str, Any]] = field(default_factory=list)
