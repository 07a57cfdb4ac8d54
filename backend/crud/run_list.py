"""The runs table's queries: sort by any column, config field or summary value, substring search
over names and tags, pagination, grouping by a config field, and bulk tag / delete.

Config and summary are JSON documents, so a sort key like `config.train.lr` becomes a JSON path
expression that both databases evaluate (PostgreSQL `#>`, SQLite `json_extract`). Numbers sort
as numbers (a JSON `0.05` is not compared as text with `0.5`), everything else as text, missing
values last whatever the direction, and the run id breaks ties so pages never overlap.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, case, cast, func, literal_column, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from backend.db.models import TERMINAL_STATUSES, Run
from bnlab.core.errors import FieldError

# Plain columns of `runs` a table can sort by (the JSON documents are reached by path).
SORT_COLUMNS = (
    "id",
    "name",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
    "step",
    "attempt",
    "sweep_id",
)
DOCUMENTS = ("config", "summary")
MAX_DEPTH = 6
_PART = re.compile(r"[A-Za-z0-9_]{1,64}")
MAX_GROUP_RUNS = 20_000  # a group-by reads one small value per run; beyond this, narrow the filter


@dataclass(frozen=True)
class SortKey:
    """`-config.train.lr` → SortKey(("config", "train", "lr"), descending=True)."""

    path: tuple[str, ...]
    descending: bool


def parse_path(text: str, field: str) -> tuple[str, ...]:
    """`config.train.lr` → ("config", "train", "lr"), or a plain column; FieldError otherwise."""
    parts = tuple(text.strip().split("."))
    if len(parts) == 1 and parts[0] in SORT_COLUMNS:
        return parts
    if parts[0] not in DOCUMENTS or len(parts) < 2:
        raise FieldError(
            field,
            f"{text!r} is neither a column ({', '.join(SORT_COLUMNS)}) nor "
            "a path under config. or summary.",
            "query",
        )
    if len(parts) > MAX_DEPTH + 1 or not all(_PART.fullmatch(p) for p in parts[1:]):
        raise FieldError(
            field,
            f"{text!r}: path parts are letters, digits or _ (at most {MAX_DEPTH} deep)",
            "query",
        )
    return parts


def parse_sort(text: str | None) -> SortKey:
    if not text:
        return SortKey(("id",), True)
    text = text.strip()
    descending = text.startswith("-")
    return SortKey(parse_path(text.lstrip("-+"), "sort"), descending)


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _json_parts(session: Session, path: tuple[str, ...]) -> tuple[ColumnElement, ColumnElement]:
    """SQLite: (numeric value or NULL, text value or NULL) of a config/summary path."""
    column = getattr(Run, path[0])
    where = "$" + "".join(f'."{p}"' for p in path[1:])
    raw = func.json_extract(column, where)
    kind = func.json_type(column, where)
    number = case((kind.in_(("integer", "real")), raw), else_=None)
    text = case((kind.in_(("integer", "real")), None), else_=cast(raw, String))
    return number, text


def order_by(session: Session, key: SortKey) -> list[ColumnElement]:
    """ORDER BY terms: the value (numbers first as numbers, then text), NULLs last, then id."""
    direction = (
        (lambda c: c.desc().nulls_last()) if key.descending else (lambda c: c.asc().nulls_last())
    )
    tie = Run.id.desc() if key.descending else Run.id.asc()
    if len(key.path) == 1:
        column = getattr(Run, key.path[0])
        return [direction(column)] if key.path[0] == "id" else [direction(column), tie]
    if _is_pg(session):
        # JSONB's own order: numbers numerically, strings as text, one extraction per row
        # (JSON null counts as missing, so it goes last like an absent key).
        node = func.nullif(getattr(Run, key.path[0])[key.path[1:]], literal_column("'null'::jsonb"))
        return [direction(node), tie]
    number, text = _json_parts(session, key.path)
    return [direction(number), direction(text), tie]


def filters(
    *,
    status: Sequence[str] | None = None,
    sweep_id: int | None = None,
    tag: str | None = None,
    text: str | None = None,
    q: str | None = None,
    ids: Sequence[int] | None = None,
) -> list[ColumnElement]:
    """WHERE terms. `tag` is one exact tag; `text` a substring of the name; `q` a substring of the
    name or of any tag (case-insensitive); `ids` restricts to those runs (a group's members)."""
    where: list[ColumnElement] = []
    if status:
        where.append(Run.status.in_(list(status)))
    if sweep_id is not None:
        where.append(Run.sweep_id == sweep_id)
    if tag:
        # Tags are a JSON list on both databases; match the JSON-encoded string element.
        where.append(cast(Run.tags, String).contains(json.dumps(tag), autoescape=True))
    if text:
        where.append(Run.name.icontains(text, autoescape=True))
    if q:
        # Inside the JSON text of the tags list a quote or backslash is escaped: search for the
        # escaped form, so `q` matches the tag as the user typed it.
        in_tags = json.dumps(q)[1:-1]
        where.append(
            or_(
                Run.name.icontains(q, autoescape=True),
                cast(Run.tags, String).icontains(in_tags, autoescape=True),
            )
        )
    if ids is not None:
        where.append(Run.id.in_(list(ids)))
    return where


def read_page(
    *, session: Session, where: list[ColumnElement], sort: SortKey, offset: int, limit: int
) -> tuple[list[Run], int]:
    """One page of runs in `sort` order, and the number of runs matching `where`."""
    count = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    order = order_by(session, sort)
    if sort.path == ("id",):  # the primary key's index gives the order: no sort at all
        rows = session.scalars(
            select(Run).where(*where).order_by(*order).offset(offset).limit(limit)
        )
        return list(rows), count
    # Sort the ids alone, then read the page's rows by id: sorting whole rows (config and summary
    # documents, ~3 KB each) of 10,000 runs spilled ~17 MB to disk on PostgreSQL (112 ms for page
    # 50 by a summary value), the ids alone sort in memory (62 ms, same load).
    page_ids = list(
        session.scalars(select(Run.id).where(*where).order_by(*order).offset(offset).limit(limit))
    )
    by_id = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(page_ids)))}
    return [by_id[i] for i in page_ids if i in by_id], count


# ---- group by ------------------------------------------------------------------------------


def _value_of(session: Session, path: tuple[str, ...]) -> ColumnElement:
    """The JSON text of a path (a column's plain value for a column), for grouping in Python."""
    if len(path) == 1:
        return getattr(Run, path[0])
    column = getattr(Run, path[0])
    if _is_pg(session):
        return cast(column[path[1:]], String)
    return func.json_quote(func.json_extract(column, "$" + "".join(f'."{p}"' for p in path[1:])))


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _stats(values: list[float]) -> dict[str, float | int | None]:
    """n, mean, sample sd (None for one value), min, max of the finite values."""
    finite = [
        v
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    n = len(finite)
    if not n:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    mean = sum(finite) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "min": min(finite), "max": max(finite)}


def group_runs(
    *, session: Session, where: list[ColumnElement], by: str, metrics: Sequence[str]
) -> tuple[list[dict[str, Any]], int]:
    """Runs matching `where` grouped by the value at `by`: per group its value, run ids (newest
    first), n, and per metric path n/mean/sd/min/max over the group's runs that have it."""
    by_path = parse_path(by, "group_by")
    metric_paths = [parse_path(m, "metrics") for m in metrics]
    count = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    if count > MAX_GROUP_RUNS:
        raise FieldError(
            "group_by",
            f"{count} runs match; group at most {MAX_GROUP_RUNS} "
            "(filter by status, tag, sweep or text first)",
            "query",
        )
    cols = [Run.id, _value_of(session, by_path), *(_value_of(session, p) for p in metric_paths)]
    groups: dict[str, dict[str, Any]] = {}
    for row in session.execute(select(*cols).where(*where).order_by(Run.id.desc())):
        value = _decode(row[1])
        key = json.dumps(value, sort_keys=True, default=str)
        group = groups.setdefault(key, {"value": value, "ids": [], "values": [[] for _ in metrics]})
        group["ids"].append(row[0])
        for i, raw in enumerate(row[2:]):
            group["values"][i].append(_decode(raw))
    out = []
    for group in groups.values():
        out.append(
            {
                "value": group["value"],
                "n": len(group["ids"]),
                "ids": group["ids"],
                "metrics": {
                    m: _stats(vals) for m, vals in zip(metrics, group["values"], strict=True)
                },
            }
        )
    # Numbers in numeric order, then everything else by its JSON text; missing values last.
    out.sort(
        key=lambda g: (
            g["value"] is None,
            not isinstance(g["value"], int | float) or isinstance(g["value"], bool),
            g["value"] if isinstance(g["value"], int | float) else 0,
            json.dumps(g["value"], sort_keys=True, default=str),
        )
    )
    return out, count


# ---- bulk ----------------------------------------------------------------------------------


def bulk_tag(
    *, session: Session, ids: Sequence[int], add: Sequence[str], remove: Sequence[str]
) -> list[int]:
    """Add and remove tags on every run of `ids` that exists; returns the ids changed."""
    changed = []
    for run in session.scalars(select(Run).where(Run.id.in_(list(ids))).with_for_update()):
        tags = [t for t in run.tags or [] if t not in set(remove)]
        tags += [t for t in add if t not in tags]
        if tags != list(run.tags or []):
            # The config keeps its own copy of the tags (the config *is* the submission).
            config = dict(run.config)
            config["tags"] = tags
            session.execute(update(Run).where(Run.id == run.id).values(tags=tags, config=config))
            changed.append(run.id)
    session.commit()
    return changed


LEAN_SUMMARY_BYTES = 8 * 2**10  # of compact JSON per run in a lean list (issue 21)
LEAN_TEXT_CHARS = 200  # a longer string is a document, not a table cell


def lean_summary(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary as a table of runs shows it: its scalars (numbers, booleans, strings up to
    LEAN_TEXT_CHARS) and mappings of them (test_acc_train_mode: per batch size), in order,
    while they fit LEAN_SUMMARY_BYTES; arrays (shift_per_channel: per layer, per channel),
    long strings and whatever does not fit are left out. Bounded whatever a run stores: the
    20 MB summary of issue 21 made every lean page 20 MB."""
    if not summary:
        return summary

    def small(value: Any, depth: int = 0) -> bool:
        if isinstance(value, str):
            return len(value) <= LEAN_TEXT_CHARS
        if isinstance(value, dict):
            return depth < 2 and all(small(v, depth + 1) for v in value.values())
        return value is None or isinstance(value, bool | int | float)

    out: dict[str, Any] = {}
    left = LEAN_SUMMARY_BYTES
    for key, value in summary.items():
        if left <= 0:
            break
        if isinstance(value, dict) and len(value) > left:  # cannot fit: not even looked at
            continue
        if not small(value):
            continue
        size = len(key) + len(json.dumps(value, separators=(",", ":"))) + 4
        if size <= left:
            out[key] = value
            left -= size
    return out


def deletable(run: Run) -> bool:
    return run.status in TERMINAL_STATUSES
