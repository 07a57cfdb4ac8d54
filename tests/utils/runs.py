"""Test data built through crud (docs/design.md, "Real services in tests"): configs, runs and
their stored series."""

from __future__ import annotations

import math
import random
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from backend.crud.runs import create_run
from backend.db.models import LAYER_KEYS, METRIC_KEYS, LayerStat, Run, RunMetric
from bnlab.core.schema.experiment import ExperimentConfig, set_dotted


def make_config(**overrides: Any) -> dict[str, Any]:
    """A small valid config as a dict; overrides by path: `train__epochs=2` or
    {"train.epochs": 2}."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "tags": ["test"],
        "dataset": {"name": "digits"},
        "model": {"widths": [16, 16], "dropout": {"rate": 0.2}},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0, "device": "cpu"},
        "probe": {
            "every_steps": 5,
            "eval_batches": 1,
            "train_mode_test_batch_sizes": [1, 8],
            "recalibrate_samples": 128,
        },
    }
    for key, value in overrides.items():
        cfg = set_dotted(cfg, key.replace("__", "."), value)
    return cfg


def add_bare_run(session: Session, **fields: Any) -> Run:
    """A run row written directly (no config validation, no queue): running, attempt 1, no
    points; `fields` override any column. Flushed, so run.id is set."""
    values: dict[str, Any] = {
        "name": "r",
        "status": "running",
        "config": {},
        "tags": [],
        "progress": 0.0,
        "step": 0,
        "attempt": 1,
        "cancel_requested": False,
    }
    run = Run(**(values | fields))
    session.add(run)
    session.flush()
    return run


def create_random_run(
    session: Session,
    *,
    status: str = "queued",
    n_steps: int = 0,
    n_layers: int = 0,
    every: int = 20,
    seed: int = 0,
    enqueue: bool = False,
    config: dict[str, Any] | None = None,
    **fields: Any,
) -> Run:
    """A run created through crud, then put in `status` with `n_steps` probe points per series."""
    cfg = ExperimentConfig.model_validate(
        config or make_config(name=f"run-{seed}-{random.random():.6f}")
    )
    run = create_run(session=session, config=cfg, enqueue=enqueue)
    run.status = status
    run.layer_names = [f"blocks.{i}.bn" for i in range(n_layers)] if n_layers else None
    for key, value in fields.items():
        setattr(run, key, value)
    session.commit()
    if n_steps:
        add_points(session, run.id, n_steps=n_steps, n_layers=n_layers, every=every, seed=seed)
    return run


def add_points(
    session: Session,
    run_id: int,
    *,
    n_steps: int,
    n_layers: int,
    every: int = 20,
    seed: int = 0,
    start: int = 0,
) -> None:
    """Smooth, plausible series (seeded): metrics for every step and each layer's stats."""
    rng = random.Random(seed)
    steps = [start + every * i for i in range(n_steps)]
    metric_rows = [
        {"run_id": run_id, "step": s, **{k: _value(k, i, rng) for k in METRIC_KEYS}}
        for i, s in enumerate(steps)
    ]
    session.execute(insert(RunMetric), metric_rows)
    base = [{k: _value(k, i, rng) for k in LAYER_KEYS} for i in range(n_steps)]
    # Layer L's stats are (L + 1) times layer 0's: tests can tell the layers apart.
    layer_rows = [
        {
            "run_id": run_id,
            "layer": layer,
            "step": s,
            **{k: v * (1 + layer) for k, v in base[i].items()},
        }
        for layer in range(n_layers)
        for i, s in enumerate(steps)
    ]
    if layer_rows:
        session.execute(insert(LayerStat), layer_rows)
    session.commit()


def _value(key: str, i: int, rng: random.Random) -> float:
    if key == "epoch":
        return i / 10
    if key == "lr":
        return 0.05
    return 1.0 + math.sin(i / 7) * 0.5 + rng.random() * 0.01
