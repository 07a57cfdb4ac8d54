"""Where the engine sends what it measures: the MetricSink protocol and two simple sinks.

The engine never knows about databases or HTTP: the worker passes a DbSink, the CLI a
MemorySink (and writes it as JSON), tests whichever they like.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bnlab.core.schema.records import ProbeRecord  # one type for the engine and ingest


@runtime_checkable
class MetricSink(Protocol):
    def on_start(self, *, device: str, total_steps: int, layer_names: list[str]) -> None: ...

    def on_probe(self, record: ProbeRecord) -> None: ...

    def on_epoch_end(self, *, epoch: int, step: int) -> None: ...

    def on_summary(self, summary: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool: ...


class MemorySink:
    """Keeps every record in memory; `as_dict()` is the `bnlab run --out` / API shape."""

    def __init__(self) -> None:
        self.by_step: dict[int, ProbeRecord] = {}
        self.summary: dict[str, Any] | None = None
        self.device: str | None = None
        self.layer_names: list[str] = []
        self.stop = False

    def on_start(self, *, device: str, total_steps: int, layer_names: list[str]) -> None:
        self.device, self.layer_names = device, list(layer_names)

    @property
    def records(self) -> list[ProbeRecord]:
        return sorted(self.by_step.values(), key=lambda r: r.step)

    def on_probe(self, record: ProbeRecord) -> None:
        # A resumed run re-emits steps after its checkpoint: keep the last value of each step.
        self.by_step[record.step] = record

    def on_epoch_end(self, *, epoch: int, step: int) -> None:
        pass

    def on_summary(self, summary: dict[str, Any]) -> None:
        self.summary = summary

    def should_stop(self) -> bool:
        return self.stop

    def metrics(self) -> dict[str, list]:
        """Run-level series, columnar: {"step": [...], "val_acc": [...], ...}."""
        records = self.records
        out: dict[str, list] = {"step": [r.step for r in records]}
        for key in dict.fromkeys(k for r in records for k in r.metrics):
            out[key] = [r.metrics.get(key) for r in records]
        return out

    def layers(self) -> dict[str, list[dict[str, Any]]]:
        """Per-BN-layer series, columnar per layer (the /api/runs/{id}/layers shape)."""
        layers: list[dict[str, Any]] = []
        records = self.records
        for i, name in enumerate(self.layer_names):
            rows = [(r.step, r.layers[i]) for r in records if i < len(r.layers)]
            entry: dict[str, Any] = {"index": i, "name": name, "step": [s for s, _ in rows]}
            for key in (k for k in (rows[0][1] if rows else {}) if k not in ("index", "name")):
                entry[key] = [row[key] for _, row in rows]
            layers.append(entry)
        return {"layers": layers}

    def as_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "config": config,
            "metrics": self.metrics(),
            "layers": self.layers(),
            "summary": self.summary,
        }


class JsonlSink(MemorySink):
    """A MemorySink that also appends every record to a JSON-lines file as it arrives."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def on_probe(self, record: ProbeRecord) -> None:
        super().on_probe(record)
        # The record's fields as they are (asdict() deep-copies every layer's dict first: the
        # same JSON, built twice).
        line = {"type": "probe", **{f.name: getattr(record, f.name) for f in fields(record)}}
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def on_summary(self, summary: dict[str, Any]) -> None:
        super().on_summary(summary)
        with self.path.open("a") as f:
            f.write(json.dumps({"type": "summary", **summary}) + "\n")
