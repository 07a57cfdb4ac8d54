"""TensorBoard event files into bnlab runs (`bnlab import tensorboard LOGDIR`), so old runs can
be compared next to new ones.

Every folder under LOGDIR that holds event files (events.out.tfevents.*) becomes one script
run, named by its path under LOGDIR (LOGDIR's own name for a flat one) and tagged `imported`,
`tensorboard`. Each scalar tag is a series under its own name (characters the server does not
take in a metric name become _; a tag that is one of bnlab's columns, such as val_acc, lands
in that column), steps as TensorBoard has them, the first wall time of each step as the run's
wall_time. Scalars written by PyTorch's SummaryWriter (simple values) and by TF2's
tf.summary.scalar (tensors) are both read.

The run's key comes from the folder's absolute path: importing the same folder again finds the
same run and stores every point once (new points of a run still being written are added).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.util import tensor_util

from bnlab.integrations._common import metric_name
from bnlab.sdk.run import MAX_LOG_KEYS
from bnlab.sdk.transport import Replay, Spool, sync

EVENTS = "events.out.tfevents"


@dataclass
class Imported:
    """One folder read: its scalars by step, and the names they were stored under."""

    folder: Path
    name: str
    steps: dict[int, dict[str, float | None]] = field(default_factory=dict)
    wall: dict[int, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # TensorBoard tag -> bnlab name

    @property
    def key(self) -> str:
        return hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()


def run_folders(logdir: Path) -> list[Path]:
    """The folders under logdir (itself included) that hold event files, sorted."""
    found = {p.parent for p in logdir.rglob(f"{EVENTS}*") if p.is_file()}
    return sorted(found)


def read(folder: Path, logdir: Path) -> Imported:
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    rel = folder.relative_to(logdir).as_posix()
    out = Imported(folder, logdir.resolve().name if rel == "." else rel)
    series: dict[str, list[tuple[int, float, float]]] = {}
    tags = acc.Tags()
    for tag in tags.get(ea.SCALARS, []):
        series[tag] = [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
    for tag in tags.get(ea.TENSORS, []):
        meta = acc.SummaryMetadata(tag)
        if meta.plugin_data.plugin_name != "scalars" or tag in series:
            continue
        values = []
        for e in acc.Tensors(tag):
            array = tensor_util.make_ndarray(e.tensor_proto)
            if array.size == 1:
                values.append((e.step, e.wall_time, float(array.reshape(()))))
        series[tag] = values
    taken: set[str] = set()
    for tag in sorted(series):
        name = metric_name(tag)
        k = 2
        while name in taken:  # two tags that differ only in characters replaced by _
            name = metric_name(f"{tag[:60]}_{k}")
            k += 1
        taken.add(name)
        out.names[tag] = name
        for step, wall, value in series[tag]:
            if not 0 <= step < 2**31:
                continue
            out.steps.setdefault(step, {})[name] = value if math.isfinite(value) else None
            out.wall[step] = min(wall, out.wall.get(step, wall))
    return out


def spool(run: Imported, path: Path, tags: list[str]) -> Path:
    """The run as a spool file, as the SDK writes one (sent with transport.sync)."""
    path.unlink(missing_ok=True)
    s = Spool(path)
    try:
        first = min(run.wall.values()) if run.wall else None
        s.append(
            {
                "type": "run",
                "key": run.key,
                "name": run.name[:200],
                "config": {"imported_from": str(run.folder.resolve()), "tensorboard": True},
                "tags": tags,
                "host": None,
                "device": None,
                "started_at": datetime.fromtimestamp(first, timezone.utc).isoformat()
                if first is not None
                else None,
            }
        )
        for step in sorted(run.steps):
            values = run.steps[step]
            names = list(values)
            for i in range(0, max(len(names), 1), MAX_LOG_KEYS):
                part = {n: values[n] for n in names[i : i + MAX_LOG_KEYS]}
                if i == 0:
                    part["wall_time"] = run.wall[step]
                s.append({"step": step, "metrics": part})
        summary: dict[str, Any] = {
            "steps": max(run.steps, default=0),
            "imported_from": str(run.folder.resolve()),
            "tensorboard_tags": run.names,
        }
        s.append({"type": "finish", "status": "succeeded", "summary": summary, "error": None})
    finally:
        s.close()
    return path


def import_logdir(
    logdir: Path,
    url: str,
    token: str | None,
    *,
    spool_dir: Path,
    tags: list[str] | None = None,
) -> list[tuple[Imported, Replay]]:
    """Import every run folder under logdir; (what was read, what the server stored) each."""
    logdir = Path(logdir)
    tags = list(dict.fromkeys(["imported", "tensorboard", *(tags or [])]))
    done = []
    for folder in run_folders(logdir):
        run = read(folder, logdir)
        path = spool(run, spool_dir / f"tensorboard-{run.key[:16]}.jsonl", tags)
        done.append((run, sync(path, url, token)))
    return done
