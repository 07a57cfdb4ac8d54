"""Sweeps: a grid over dotted config paths (x seeds) becomes one run per cell.

Every cell is checked like a single submission before anything is stored, and an error names
the grid field that produced it (`grid.model.dropout.rate`), so a sweep is stored whole or not
at all.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from backend.crud.checks import check_storable, check_submission
from backend.crud.runs import new_run, send_run
from backend.db.models import Sweep
from backend.settings import settings
from bnlab.core.errors import FieldError
from bnlab.core.schema.experiment import ExperimentConfig, set_dotted
from bnlab.core.schema.sweeps import SweepCreate


def sweep_size(sweep: SweepCreate) -> int:
    """Runs the sweep expands to: product of the grid's value counts times the seed count."""
    return math.prod(len(values) for values in sweep.grid.values()) * len(sweep.seeds or [None])


def _grid_field(field: str, keys: list[str]) -> str:
    """Name the grid key responsible for an error at `field` (or the field itself)."""
    for key in keys:
        if field == key or field.startswith(key + ".") or key.startswith(field + "."):
            return f"grid.{key}"
    return field


def _short(value: Any) -> str:
    return ">".join(map(str, value)) if isinstance(value, list) else str(value)


def _cell_name(base_name: str, cell: dict[str, Any], seed: int | None) -> str:
    parts = [f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in cell.items()]
    if seed is not None:
        parts.append(f"seed={seed}")
    return (f"{base_name} · {' '.join(parts)}" if parts else base_name)[:200]


def _cell_config(
    base: dict[str, Any], cell: dict[str, Any], seed: int | None, keys: list[str]
) -> ExperimentConfig:
    data = copy.deepcopy(base)  # once per cell, then set in place: linear in the grid's keys
    for key, value in cell.items():
        try:
            set_dotted(data, key, value, in_place=True)
        except (ValueError, AttributeError, TypeError):
            raise FieldError(f"grid.{key}", "does not lead to a config field") from None
    if seed is not None:
        set_dotted(data, "train.seed", seed, in_place=True)
    data["name"] = _cell_name(base["name"], cell, seed) if "name" not in cell else data["name"]
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _grid_field(".".join(str(p) for p in err["loc"]) or "base", keys)
        value = cell.get(field.removeprefix("grid."), cell) if field.startswith("grid.") else cell
        raise FieldError(field, f"{err['msg']} (value {_brief(value)})") from None


def _brief(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def cell_configs(sweep: SweepCreate) -> list[tuple[list[str], ExperimentConfig]]:
    """Every cell's validated config (schema only), with the grid keys; no caps, no database."""
    base, keys = sweep.base.model_dump(mode="json"), list(sweep.grid)
    return [
        (keys, _cell_config(base, dict(zip(keys, values, strict=True)), seed, keys))
        for values in itertools.product(*(sweep.grid[k] for k in keys))
        for seed in sweep.seeds or [None]
    ]


def expand_sweep(*, session: Session, sweep: SweepCreate) -> list[ExperimentConfig]:
    """Every cell's config, checked like a single run; a FieldError naming the grid field
    otherwise."""
    size = sweep_size(sweep)
    if size > settings.max_sweep_runs:
        raise FieldError(
            "grid",
            f"the sweep expands to {size} runs, above the cap of "
            f"{settings.max_sweep_runs} (BNLAB_MAX_SWEEP_RUNS)",
        )
    check_storable(sweep.name, "name")
    configs = []
    for keys, config in cell_configs(sweep):
        try:
            check_submission(session=session, config=config)
        except FieldError as exc:
            raise FieldError(_grid_field(exc.field, keys), exc.reason) from None
        configs.append(config)
    return configs


def create_sweep(*, session: Session, sweep: SweepCreate, enqueue: bool = True) -> Sweep:
    """Store the sweep and all its runs in one commit, then enqueue each run."""
    configs = expand_sweep(session=session, sweep=sweep)
    row = Sweep(
        name=sweep.name or sweep.base.name,
        base=sweep.base.model_dump(mode="json"),
        grid=sweep.grid,
        seeds=sweep.seeds,
    )
    session.add(row)
    session.flush()
    runs = [new_run(config=config, sweep_id=row.id) for config in configs]
    session.add_all(runs)
    session.commit()
    if enqueue:
        for run in runs:
            send_run(session=session, run=run)
    session.refresh(row)
    return row
