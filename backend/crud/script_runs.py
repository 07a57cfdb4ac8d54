"""Script runs (issue 15): runs streamed by the bnlab SDK from a user's own training loop.

They live in the same tables as the runs a worker trains (kind "script" instead of "engine"),
so the run list, run page, compare view and series reads serve both. What differs is who
writes them: the client, over REST, holding a secret per run (script_keys).

running ──finish──► succeeded | failed | cancelled | diverged
   │ no heartbeat for BNLAB_SCRIPT_TIMEOUT_S          ▲
   └──► crashed ──(points still accepted: `bnlab sync`)┘ finish from a synced spool
           └──heartbeat from a live client / resume──► running

Resume (a restarted script continuing its run) proves possession of one of the run's keys: the
API token alone never lets a client write into a run it did not create (issue 21). A run heard
from within live_s (LIVE_S, or BNLAB_SCRIPT_TIMEOUT_S if shorter) still has its client: resuming
it is a 409 with Retry-After, so two processes never write one run at once; the SDK waits that
out, which is what a script restarted right after a crash needs.

No worker ever holds a script run: the reconciler never requeues one (crud/lifecycle.py).

Progress: a script that said how long it runs (total_steps) gets step / total_steps from every
points batch and heartbeat, never lowered (a replayed spool, an out-of-order batch) and at most
RUNNING_CAP until the run ends: 1.0 means succeeded. Without total_steps it stays 0 while the
run runs (the dashboard shows the step); nothing is made up. Cancel from the dashboard only
sets cancel_requested; every points and heartbeat answer carries it, and the SDK stops the loop
and finishes the run `cancelled` itself (so the points it spooled are all sent first).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.crud import columns
from backend.crud.ingest import write_rows
from backend.db.models import ExtraMetric, Run, ScriptKey, SeriesPack, utcnow
from bnlab.core import wire
from bnlab.core.errors import Conflict, FieldError, NotFound, TooLarge
from bnlab.core.registry import LAYER_KEYS, METRIC_KEYS, METRIC_NAME_PATTERN, RUN_KEY_HEADER
from bnlab.core.schema.script_runs import ScriptRunCreate, ScriptRunFinish

# One ingest request: bounded so one client cannot hold the database (or the API's memory) for
# long; the SDK sends far smaller batches.
MAX_RECORDS = 10_000  # probe steps per request
MAX_LAYER_ROWS = 500_000  # (layer, step) points per request
MAX_LAYERS = 4096  # reported layers of one model
MAX_EXTRA_KEYS = 64  # metrics outside METRIC_KEYS, per record
MAX_STEP = 2**31 - 1  # steps are 32-bit integers in the database
EXTRA_KEY = re.compile(METRIC_NAME_PATTERN)
ACCEPTS_POINTS = ("running", "crashed")  # crashed: a spool synced after the client died
RUNNING_CAP = 0.99  # a script run's progress while it runs: 1.0 only once it has succeeded
# A run heard from (points or heartbeat) this recently is alive: nobody may resume it. The
# SDK's heartbeat comes every 2 s by default (heartbeat_s), so 15 s is ~7 missed ones.
LIVE_S = 15.0
_METRIC_SET = frozenset(METRIC_KEYS)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyRejected(Exception):
    """The run key is missing (401) or does not belong to the run (403); `message` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class Alive(Conflict):
    """The run's client was heard from `ago` s ago (409): retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def fraction(step: int, total_steps: int | None) -> float | None:
    """A running script run's progress at `step` of `total_steps` (None: no plan given)."""
    if not total_steps or step < 0:
        return None
    return min(RUNNING_CAP, step / total_steps)


def _greatest(session: Session, column: Any, value: Any) -> ColumnElement:
    if session.get_bind().dialect.name == "postgresql":
        return func.greatest(column, value)
    return func.max(column, value)  # SQLite's two-argument max


def _progress_values(session: Session, run: Run, step: int) -> dict[str, Any]:
    """The UPDATE values that move the run's progress to `step` (never back)."""
    value = fraction(step, run.total_steps)
    return {} if value is None else {"progress": _greatest(session, Run.progress, value)}


# ----------------------------------------------------------------------------- lifecycle


def create_script_run(*, session: Session, body: ScriptRunCreate) -> tuple[Run, bool]:
    """The run this key names, or a new `running` script run; (run, created). Idempotent by
    key: a client retrying its create, or a spool synced twice, gets the same run."""
    digest = key_hash(body.key)
    found = session.get(ScriptKey, digest)
    if found is not None:
        return session.get(Run, found.run_id), False
    now = utcnow()
    run = Run(
        name=body.name,
        status="running",
        kind="script",
        config=body.config,
        tags=list(body.tags),
        host=body.host,
        device=body.device,
        layer_names=body.layer_names,
        total_steps=body.total_steps,
        progress=0.0,
        step=0,
        attempt=1,
        cancel_requested=False,
        started_at=body.started_at or now,
        heartbeat_at=now,
    )
    session.add(run)
    session.flush()
    session.add(ScriptKey(key_hash=digest, run_id=run.id))
    try:
        session.commit()
    except IntegrityError:  # the same key created concurrently: that one wins
        session.rollback()
        found = session.get(ScriptKey, digest)
        if found is None:
            raise
        return session.get(Run, found.run_id), False
    return run, True


def _owner(session: Session, secret: str) -> int | None:
    return session.scalar(select(ScriptKey.run_id).where(ScriptKey.key_hash == key_hash(secret)))


def authorize(*, session: Session, run_id: int, secret: str | None) -> Run:
    """The script run `run_id` if `secret` is one of its keys; NotFound / KeyRejected else."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if not secret:
        raise KeyRejected("missing run key (X-Bnlab-Run-Key header)", 401)
    if _owner(session, secret) != run_id:
        # Never say which run the key belongs to: that would leak other runs' ids.
        raise KeyRejected(f"the run key does not belong to run {run_id}", 403)
    return run


def _ago(when: datetime | None) -> float | None:
    return None if when is None else (utcnow() - when).total_seconds()


def resume(
    *,
    session: Session,
    run: Run,
    secret: str,
    proof: str | None,
    total_steps: int | None = None,
    live_s: float = LIVE_S,
) -> Run:
    """Continue a script run from a restarted script: running again, attempt + 1, `secret`
    added to its keys (the earlier ones stay valid for `bnlab sync`); total_steps, when given,
    replaces the planned length. `proof`: one of the run's existing keys (401 / 403 without
    it). A run heard from within `live_s` is alive: Alive (409, retry later)."""
    if run.kind != "script":
        raise Conflict(
            f"run {run.id} is trained by a worker from its config; only script runs "
            "are resumed with bnlab.init(resume=...)"
        )
    owner = _owner(session, secret)
    if owner == run.id:
        # This resume was made already: the resumed script's own sender, or `bnlab sync` of
        # its spool, sends the spool's resume line again. Holding a key of the run is the proof;
        # nothing changes (a synced spool must not bring a dead run back to running).
        return run
    if owner is not None:
        raise Conflict("key: this key already names another run; make a fresh one")
    if not proof:
        raise KeyRejected(
            f"resuming run {run.id} needs one of its keys in {RUN_KEY_HEADER} (the key of the "
            "process that created or last resumed it; the SDK keeps it in its spool folder)",
            401,
        )
    if _owner(session, proof) != run.id:
        raise KeyRejected(f"the run key does not belong to run {run.id}", 403)
    if run.status == "succeeded":
        raise Conflict(f"run {run.id} already succeeded; start a new run instead")
    plan: dict[str, Any] = {}
    if total_steps is not None:  # the plan changed: progress follows it (it may go down)
        plan = {"total_steps": total_steps, "progress": fraction(run.step, total_steps)}
    now = utcnow()
    # One conditional UPDATE: of two resumes at once (or a resume racing the live client's
    # heartbeat) exactly one wins; the other finds the run alive (its heartbeat_at is now).
    taken = session.execute(
        update(Run)
        .where(
            Run.id == run.id,
            Run.status != "succeeded",
            or_(
                Run.status != "running",
                Run.heartbeat_at.is_(None),
                Run.heartbeat_at < now - timedelta(seconds=live_s),
            ),
        )
        .values(
            status="running",
            attempt=Run.attempt + 1,
            heartbeat_at=now,
            finished_at=None,
            error=None,
            cancel_requested=False,
            **plan,
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        session.rollback()
        session.refresh(run)
        if run.status == "succeeded":
            raise Conflict(f"run {run.id} already succeeded; start a new run instead")
        ago = _ago(run.heartbeat_at) or 0.0
        wait = max(1.0, live_s - ago)
        raise Alive(
            f"run {run.id} is alive: its client was heard from {max(ago, 0.0):.0f} s ago (a "
            f"run heard from within {live_s:g} s is still running); stop that client, or "
            f"retry after {wait:.0f} s if it died",
            retry_after=wait,
        )
    session.add(ScriptKey(key_hash=key_hash(secret), run_id=run.id))
    session.commit()
    session.refresh(run)
    return run


def heartbeat(*, session: Session, run: Run, step: int | None = None) -> Run:
    """The client is alive: touch the run; a run called crashed while its client was only cut
    off comes back to `running`. `step`: the loop's current step, for the progress (run.step
    stays the last probed step: a resume goes on from there). 409 for a run that ended
    otherwise."""
    if run.status not in ACCEPTS_POINTS:
        raise Conflict(f"run {run.id} already ended ({run.status})")
    progress = {} if step is None else _progress_values(session, run, step)
    session.execute(
        update(Run)
        .where(Run.id == run.id, Run.status.in_(ACCEPTS_POINTS))
        .values(status="running", heartbeat_at=utcnow(), finished_at=None, error=None, **progress)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(run)
    return run


def finish(*, session: Session, run: Run, body: ScriptRunFinish) -> Run:
    """Record how the script ended. Idempotent: the same end again is a no-op (a spool synced
    twice); a different end of an ended run is a 409. A crashed run takes its synced end."""
    if run.status == body.status:
        return run
    if run.status not in ACCEPTS_POINTS:
        raise Conflict(f"run {run.id} already ended ({run.status}); it cannot end {body.status}")
    values: dict[str, Any] = dict(
        status=body.status, finished_at=utcnow(), error=body.error, summary=body.summary
    )
    if body.status == "succeeded":
        values["progress"] = 1.0
    done = session.execute(
        update(Run)
        .where(Run.id == run.id, Run.status.in_(ACCEPTS_POINTS))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(run)
    if done.rowcount != 1 and run.status != body.status:
        raise Conflict(f"run {run.id} already ended ({run.status}); it cannot end {body.status}")
    return run


def crash_silent_runs(*, session: Session, timeout_s: float) -> list[int]:
    """Script runs whose client sent nothing for `timeout_s` end `crashed` (nobody resumes
    them; `bnlab sync` or `bnlab.init(resume=...)` still can). Commits; returns their ids."""
    now = utcnow()
    cutoff = now - timedelta(seconds=timeout_s)
    ids = list(
        session.scalars(
            update(Run)
            .where(Run.kind == "script", Run.status == "running", Run.heartbeat_at < cutoff)
            .values(
                status="crashed",
                finished_at=now,
                error=f"the script sent nothing for {timeout_s:g} s (process killed or offline)",
            )
            .returning(Run.id)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    return ids


# ----------------------------------------------------------------------------- ingest


@dataclass
class Batch:
    """A parsed ingest request: rows ready for crud.ingest.write_rows."""

    metric_rows: list[tuple]
    layer_rows: list[tuple]
    extra_rows: list[dict[str, Any]]
    last_step: int
    layer_names: list[str] | None
    # the binary columns body (crud/columns.py): (n, 2) layer/step and (n, keys) values
    layer_index: Any = None
    layer_values: Any = None


def _number(value: Any, where: str) -> float | None:
    # bool is an int in Python, never a measurement. Non-finite: JSON has none, but a float
    # that overflows in the database's hands is stored as unknown, like the engine's NaN.
    if value is None:
        return None
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return float(value) if abs(value) < 2**63 else None
    raise FieldError(where, f"must be a number or null, got {type(value).__name__}")


def parse_batch(run_id: int, payload: Any) -> Batch:
    """Validate an ingest body and build its rows (hand-written: pydantic over 100k values
    costs more than writing them). Every error names the offending field.

    {"layer_names": [...]?, "layer_keys": [...]? (default: every LAYER_KEYS entry, in order),
     "records": [{"step": int, "metrics": {key: number|null}?,
                  "layers": [[one number|null per layer key] | null, ...]?}, ...]}
    """
    if not isinstance(payload, dict):
        raise FieldError("body", "must be a JSON object with `records`")
    unknown = set(payload) - {"records", "layer_names", "layer_keys"}
    if unknown:
        raise FieldError(
            sorted(unknown)[0], "unknown field; expected records, layer_names, layer_keys"
        )
    keys = payload.get("layer_keys", LAYER_KEYS)
    if (
        not isinstance(keys, list | tuple)
        or len(set(keys)) != len(keys)
        or not all(isinstance(k, str) and k in LAYER_KEYS for k in keys)
    ):
        raise FieldError("layer_keys", f"must name each of {list(LAYER_KEYS)} at most once")
    keys = tuple(keys)
    width = len(keys)
    # Clients name the statistics they send (an older SDK knows fewer): each goes to its
    # column, the others are NULL.
    position = (
        None if keys == LAYER_KEYS else [keys.index(k) if k in keys else None for k in LAYER_KEYS]
    )
    records = payload.get("records")
    if not isinstance(records, list):
        raise FieldError("records", "must be a list of probe records")
    if len(records) > MAX_RECORDS:
        raise TooLarge(f"records: {len(records)} records in one request; at most {MAX_RECORDS}")
    names = payload.get("layer_names")
    if names is not None:
        if (
            not isinstance(names, list)
            or len(names) > MAX_LAYERS
            or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names)
        ):
            raise FieldError(
                "layer_names", f"must be a list of at most {MAX_LAYERS} names of 1-200 characters"
            )
        for i, n in enumerate(names):
            if "\x00" in n:  # PostgreSQL text cannot hold one; refused as in names and tags
                raise FieldError(f"layer_names.{i}", "must not contain NUL characters")
    metrics: dict[int, tuple] = {}
    layers: dict[tuple[int, int], tuple] = {}
    extras: dict[tuple[str, int], float | None] = {}
    n_layer_rows, last = 0, -1
    for r, rec in enumerate(records):
        at = f"records.{r}"
        if not isinstance(rec, dict):
            raise FieldError(at, "must be an object with step, metrics, layers")
        step = rec.get("step")
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            raise FieldError(f"{at}.step", f"must be an integer in [0, {MAX_STEP}]")
        last = max(last, step)
        m = rec.get("metrics") or {}
        if not isinstance(m, dict):
            raise FieldError(f"{at}.metrics", "must be an object of key: number")
        if m:
            row = [run_id, step] + [None] * len(METRIC_KEYS)
            n_extra = 0
            for key, value in m.items():
                v = _number(value, f"{at}.metrics.{key}")
                if key in _METRIC_SET:
                    row[2 + METRIC_KEYS.index(key)] = v
                    continue
                n_extra += 1
                if n_extra > MAX_EXTRA_KEYS or not EXTRA_KEY.match(key):
                    raise FieldError(
                        f"{at}.metrics.{key}",
                        f"metric names are letters, digits "
                        f"and _.-/ (at most 64 chars, {MAX_EXTRA_KEYS} per record)",
                    )
                extras[(key, step)] = v
            # Only a record with a fixed key writes the step's metrics row: one holding only
            # the script's own names (run.log({"val/acc": x})) must not blank the probe's
            # train_loss / val_acc stored at that step, nor put a row of nulls between probes.
            if n_extra < len(m):
                metrics[step] = tuple(row)
        rows = rec.get("layers") or []
        if not isinstance(rows, list) or len(rows) > MAX_LAYERS:
            raise FieldError(f"{at}.layers", f"must be a list of at most {MAX_LAYERS} layers")
        n_layer_rows += len(rows)
        if n_layer_rows > MAX_LAYER_ROWS:
            raise TooLarge(f"records: more than {MAX_LAYER_ROWS} layer points in one request")
        for i, values in enumerate(rows):
            if values is None:  # a unit the client did not measure at this step
                continue
            if not isinstance(values, list) or len(values) != width:
                raise FieldError(
                    f"{at}.layers.{i}", f"must be {width} numbers or null ({', '.join(keys)})"
                )
            if not (all(type(v) is float for v in values) and all(map(math.isfinite, values))):
                values = [_number(v, f"{at}.layers.{i}.{keys[k]}") for k, v in enumerate(values)]
            if position is not None:
                values = [None if p is None else values[p] for p in position]
            layers[(i, step)] = (run_id, i, step, *values)
    extra_rows = [
        {"run_id": run_id, "key": k, "step": s, "value": v} for (k, s), v in extras.items()
    ]
    return Batch(list(metrics.values()), list(layers.values()), extra_rows, last, names)


def parse_columns_batch(run_id: int, raw: bytes) -> Batch:
    """A binary columns body (crud/columns.py): its header's records give the run-level rows
    (validated as in parse_batch), its arrays the layer points."""
    header, index, values = wire.parse(
        raw, max_rows=MAX_LAYER_ROWS, max_layers=MAX_LAYERS, max_step=MAX_STEP
    )
    payload = {"records": header.get("records", [])}
    if "layer_names" in header:
        payload["layer_names"] = header["layer_names"]
    batch = parse_batch(run_id, payload)
    if len(index):
        batch.last_step = max(batch.last_step, int(index[:, 1].max()))
    batch.layer_index, batch.layer_values = index, values
    return batch


def ingest(*, session: Session, run: Run, batch: Batch) -> dict[str, Any]:
    """Store a batch into a running (or crashed: synced) script run, idempotently by
    (run, step): a re-sent batch overwrites its own points with the same values."""
    if run.kind != "script":
        raise Conflict(f"run {run.id} is trained by a worker; only script runs take points")
    if run.status not in ACCEPTS_POINTS:
        raise Conflict(f"run {run.id} already ended ({run.status}); it takes no more points")
    values: dict[str, Any] = {
        "step": func.greatest(Run.step, batch.last_step)
        if session.get_bind().dialect.name == "postgresql"
        else func.max(Run.step, batch.last_step)
    }
    if run.status == "running":
        values["heartbeat_at"] = utcnow()  # points are a heartbeat too
    else:
        # Crashed, with points arriving from a synced spool: the series changed after the run
        # ended, so its packs go and its finish time moves (the read caches key on it).
        values["finished_at"] = utcnow()
    if batch.layer_names is not None:
        values["layer_names"] = batch.layer_names
    values.update(_progress_values(session, run, batch.last_step))
    # The UPDATE locks the run row first: writers of one run are serialized, which the COPY
    # fast path of write_rows relies on (see crud/ingest.py _only_new_steps). It returns what
    # the client is told besides the counts: a cancel from the dashboard reaches the SDK so.
    locked = session.execute(
        update(Run)
        .where(Run.id == run.id, Run.status.in_(ACCEPTS_POINTS))
        .values(**values)
        .returning(Run.status, Run.cancel_requested, Run.progress)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if locked is None:
        session.rollback()
        raise Conflict(f"run {run.id} ended while the points arrived; they were not stored")
    if run.status != "running":
        session.execute(delete(SeriesPack).where(SeriesPack.run_id == run.id))
    n_metrics, n_layers = write_rows(
        session=session, metric_rows=batch.metric_rows, layer_rows=batch.layer_rows
    )
    if batch.layer_index is not None:
        n_layers += columns.write(session, run.id, batch.layer_index, batch.layer_values)
    if batch.extra_rows:
        _upsert_extra(session, batch.extra_rows)
    session.commit()
    return {
        "run_id": run.id,
        "metric_rows": n_metrics,
        "layer_rows": n_layers,
        "extra_rows": len(batch.extra_rows),
        "last_step": batch.last_step,
        "status": locked.status,
        "cancel_requested": bool(locked.cancel_requested),
        "progress": locked.progress if locked.progress is not None else 0.0,
    }


def _upsert_extra(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ExtraMetric)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["run_id", "key", "step"], set_={"value": stmt.excluded.value}
        ),
        rows,
    )


def read_extra_metrics(*, session: Session, run_id: int) -> dict[str, dict[str, list]]:
    """A run's extra metrics: {key: {"step": [...], "value": [...]}}, steps ascending."""
    out: dict[str, dict[str, list]] = {}
    for key, step, value in session.execute(
        select(ExtraMetric.key, ExtraMetric.step, ExtraMetric.value)
        .where(ExtraMetric.run_id == run_id)
        .order_by(ExtraMetric.key, ExtraMetric.step)
    ):
        series = out.setdefault(key, {"step": [], "value": []})
        series["step"].append(step)
        series["value"].append(value)
    return out
