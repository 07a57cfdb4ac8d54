"""`bnlab`: the command line. serve the stack, run a config in-process, talk to a server.

The top floor: it may import every part, and imports the server, the worker and the engine
inside the commands that run them. A client install (no extra) has none of their libraries and
still runs `sync`, `submit`, `runs`, `export` and `describe`; the server commands then say which
extra they need. And `serve --data-dir` must set the environment before the server's settings
are read.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from bnlab.core.registry import TERMINAL_STATUSES

app = typer.Typer(
    help="bnlab: run, watch and compare BatchNorm / Dropout experiments.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err = Console(stderr=True)

DEFAULT_URL = os.environ.get("BNLAB_URL", "http://127.0.0.1:8000")


@contextmanager
def _needs(extra: str, command: str) -> Iterator[None]:
    """Imports of a command's part: a library this install lacks is one line naming the extra
    that brings it, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("bnlab", "backend", "worker"):
            raise  # our own code missing is a bug, not an install choice
        raise _fail(
            f"`bnlab {command}` needs the {extra} extra: pip install 'bnlab[{extra}]' "
            f"({exc.name} is not installed)",
            1,
        ) from None


def _fail(message: str, code: int = 2) -> typer.Exit:
    # markup off: messages carry user text and pydantic's "[type=...]", not rich markup.
    # soft_wrap: one line whatever the terminal width (scripts and logs grep for it).
    err.print(f"error: {message}", style="red", highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="HTTP port."),
    data_dir: Path | None = typer.Option(None, help="Data directory (default ~/.bnlab)."),
    workers: int = typer.Option(1, min=0, help="Celery worker processes to supervise."),
) -> None:
    """The whole stack: migrate the database, supervise the worker(s), serve API + dashboard."""
    if data_dir is not None:
        os.environ["BNLAB_DATA_DIR"] = str(data_dir.expanduser().resolve())
    with _needs("server", "serve"):
        from backend.supervisor import SetupError, serve_stack

    try:
        serve_stack(host=host, port=port, n_workers=workers)
    except SetupError as exc:  # one line, not a traceback: a read-only or missing data dir
        raise _fail(str(exc), 1) from None


@app.command()
def worker(
    gpus: str = typer.Option(
        "none",
        help="all, none, or GPU indices like 0,1,3: one worker process per GPU, "
        "each pinned with CUDA_VISIBLE_DEVICES (env BNLAB_GPUS).",
        envvar="BNLAB_GPUS",
    ),
    workers: int = typer.Option(
        1, min=1, envvar="BNLAB_CPU_WORKERS", help="CPU worker processes with --gpus none."
    ),
) -> None:
    """Worker processes only (no API): for a GPU host, or a worker host of a cluster."""
    with _needs("worker", "worker"):
        from backend.gpu_workers import GpuSpecError, parse_gpus, run_workers

    try:
        gpu_list = parse_gpus(gpus)
    except GpuSpecError as exc:
        raise _fail(str(exc)) from exc
    run_workers(gpu_list, cpu_workers=workers)


@app.command("make-cifar")
def make_cifar(
    folder: Path = typer.Argument(..., file_okay=False, help="Folder to write."),
    classes: int = typer.Option(10, help="10 (CIFAR-10 layout) or 100 (CIFAR-100)."),
    n: int = typer.Option(5000, min=10, help="Training images."),
    n_test: int | None = typer.Option(None, min=10, help="Test images (default n/5)."),
    seed: int = typer.Option(0, min=0),
) -> None:
    """Write synthetic CIFAR-format files (a learnable signal, nothing downloaded) for tests
    and the CPU study presets; read them with dataset.name cifar10 / cifar100."""
    if classes not in (10, 100):
        raise _fail("--classes must be 10 or 100")
    with _needs("worker", "make-cifar"):
        from bnlab.engine.cifar import write_cifar
    out = write_cifar(folder, classes=classes, n=n, n_test=n_test, seed=seed)
    console.print(f"wrote {n} + {n_test or max(n // 5, 100)} images to {out}", highlight=False)


@app.command()
def run(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="ExperimentConfig JSON."),
    out: Path | None = typer.Option(None, help="Write config, metrics, layers, summary here."),
    deterministic: bool = typer.Option(
        False,
        help="One torch thread and deterministic algorithms: the run repeats bit for "
        "bit (figures otherwise move with the thread count).",
    ),
) -> None:
    """Train one experiment in this process, no server (needs the worker extra: torch)."""
    with _needs("worker", "run"):  # trains in this process: torch
        from worker.local import run_local
    try:
        result = run_local(config, out, deterministic=deterministic)
    except Exception as exc:  # ConfigError names the field path; anything else propagates
        if type(exc).__name__ in ("ConfigError", "ValidationError"):
            raise _fail(f"invalid config: {exc}") from exc
        raise
    summary = result.get("summary") or {}
    acc = summary.get("test_acc_eval")
    console.print(
        f"{result.get('status')}"
        + (f": test_acc_eval={acc:.4f}" if acc is not None else "")
        + (f" ({result['error']})" if result.get("error") else "")
        + (f"; wrote {out}" if out else "")
    )
    if result.get("status") != "succeeded":
        raise typer.Exit(1)


@app.command()
def describe(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="ExperimentConfig JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print it as JSON."),
) -> None:
    """What a config builds, before training and without data files: its BN layers (place,
    what feeds each), where dropout sits, the parameter count, rough memory and time."""
    from bnlab.core.schema.describe import describe_json_text, format_description

    try:
        desc = describe_json_text(config.read_text(), str(config))
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        print(json.dumps(desc, indent=2))
    else:
        console.print(format_description(desc), markup=False, highlight=False, soft_wrap=True)


def _client(url: str, token: str | None):
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)


def _check(resp) -> dict:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        if isinstance(detail, list):  # pydantic errors: name every field path
            detail = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}"
                for d in detail
            )
        raise _fail(f"{resp.request.method} {resp.request.url.path} → {resp.status_code}: {detail}")
    return resp.json()


URL = typer.Option(DEFAULT_URL, help="bnlab server (env BNLAB_URL).")
TOKEN = typer.Option(None, envvar="BNLAB_API_TOKEN", help="API token for writes.")


@app.command()
def submit(
    config: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, help="ExperimentConfig JSON (or use --preset)."
    ),
    preset: str | None = typer.Option(None, help="Submit a preset study by id instead."),
    full: bool = typer.Option(False, help="With --preset: its GPU-sized 'full' variant."),
    url: str = URL,
    token: str | None = TOKEN,
    watch: bool = typer.Option(False, help="Show a progress bar until the run(s) end."),
) -> None:
    """Submit a config (or a preset: one run or a sweep) to a server; prints the run ids."""
    import httpx

    if (config is None) == (preset is None):
        raise _fail("give either CONFIG or --preset ID")
    try:
        with _client(url, token) as client:
            path, payload = _submission(client, config, preset, full)
            created = _check(client.post(path, json=payload))
            run_list = created.get("runs", [created])
            for run in run_list:
                console.print(f"run {run['id']} {run['status']}")
            if watch:
                for run in run_list:
                    _watch(client, run["id"])
    except httpx.TransportError as exc:
        raise _fail(f"cannot reach {url}: {exc}", 1) from exc


def _submission(client, config: Path | None, preset: str | None, full: bool) -> tuple[str, dict]:  # noqa: ANN001
    """(endpoint, body) for a config file or a preset (a run preset or a sweep preset)."""
    if config is not None:
        try:
            return "/api/runs", json.loads(config.read_text())
        except json.JSONDecodeError as exc:
            raise _fail(f"{config}: not valid JSON ({exc})") from exc
    found = _check(client.get(f"/api/presets/{preset}"))
    kind = found["kind"]  # "run" or "sweep"; `full` has the same shape as its CPU-sized body
    body = found.get("full") if full else found.get("sweep" if kind == "sweep" else "config")
    if not body:
        raise _fail(f"preset '{preset}' has no {'full variant' if full else kind}")
    return ("/api/sweeps" if kind == "sweep" else "/api/runs"), body


def _watch(client, run_id: int) -> None:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("run {task.fields[rid]} {task.fields[status]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("run", total=1.0, rid=run_id, status="queued")
        while True:
            run = _check(client.get(f"/api/runs/{run_id}"))
            bar.update(task, completed=run.get("progress") or 0.0, status=run["status"])
            if run["status"] in TERMINAL_STATUSES:
                break
            time.sleep(1.0)
    summary = run.get("summary") or {}
    console.print(
        f"run {run_id} {run['status']}"
        + (
            f": test_acc_eval={summary['test_acc_eval']:.4f}"
            if summary.get("test_acc_eval") is not None
            else ""
        )
        + (f" ({run['error']})" if run.get("error") else "")
    )
    if run["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def runs(
    url: str = URL,
    status: str | None = typer.Option(None, help="Filter by status."),
    limit: int = typer.Option(50, min=1, max=500),
) -> None:
    """List runs in a table."""
    import httpx
    from rich.table import Table

    params = {"limit": limit, **({"status": status} if status else {})}
    try:
        with _client(url, None) as client:
            page = _check(client.get("/api/runs", params=params))
    except httpx.TransportError as exc:
        raise _fail(f"cannot reach {url}: {exc}", 1) from exc
    table = Table("id", "name", "status", "progress", "attempt", "device", "test acc", "created")
    table.columns[1].overflow = "fold"  # names are what users look for: wrap, never cut
    for r in page.get("data", []):
        acc = (r.get("summary") or {}).get("test_acc_eval")
        table.add_row(
            str(r["id"]),
            r["name"],
            r["status"],
            f"{100 * (r.get('progress') or 0):.0f}%",
            str(r.get("attempt", "")),
            r.get("device") or "",
            "" if acc is None else f"{acc:.4f}",
            str(r.get("created_at", ""))[:19],
        )
    console.print(table)
    console.print(f"{len(page.get('data', []))} of {page.get('count', '?')} runs")


@app.command()
def export(
    run_id: int,
    fmt: str = typer.Option("npz", "--format", help="npz or onnx."),
    out: Path | None = typer.Option(None, help="Output file (default run-ID.FORMAT)."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Download a finished run's weights (BN folded) as npz or ONNX."""
    import httpx

    if fmt not in ("npz", "onnx"):
        raise _fail(f"--format must be npz or onnx, not {fmt!r}")
    out = out or Path(f"run-{run_id}.{fmt}")
    try:
        with _client(url, token) as client:
            resp = client.get(f"/api/runs/{run_id}/export", params={"format": fmt})
            if resp.status_code >= 400:
                _check(resp)
    except httpx.TransportError as exc:
        raise _fail(f"cannot reach {url}: {exc}", 1) from exc
    out.write_bytes(resp.content)
    console.print(f"wrote {out} ({len(resp.content)} bytes)")


SYNC_SHOWN = 20  # refusals listed per spool (the count says how many more)


@app.command()
def sync(
    paths: list[Path] = typer.Argument(
        ..., exists=True, help="Spool files (or folders of them) to send."
    ),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Send what a script's bnlab SDK spooled (offline, or its process died) to a server.
    Safe to repeat: every point is stored once. A line that cannot be read or is refused is
    reported by its line number and everything else is stored; the run is then not finished
    (exit 1): repair the spool and sync it again to complete it."""
    from bnlab.sdk.transport import Unreachable
    from bnlab.sdk.transport import sync as send_spool

    files = [f for p in paths for f in (sorted(p.glob("*.jsonl")) if p.is_dir() else [p])]
    if not files:
        raise _fail("no spool files (*.jsonl) in " + ", ".join(map(str, paths)))
    incomplete = 0
    for f in files:
        try:
            state = send_spool(f, url, token)
        except Unreachable as exc:
            raise _fail(
                f"cannot reach {url}: {exc}; nothing lost, run `bnlab sync` again", 1
            ) from exc
        except OSError as exc:
            raise _fail(f"{f}: cannot read it ({exc})") from exc
        ended = f", {state.finished}" if state.finished else ", still open"
        console.print(
            f"{f}: run {state.run_id}: {state.records} records in {state.requests} requests{ended}",
            highlight=False,
        )
        for note in state.notes:
            console.print(f"  {note}", highlight=False, markup=False)
        for reason in state.skipped[:SYNC_SHOWN]:
            err.print(f"  {f.name}: {reason}", highlight=False, markup=False, soft_wrap=True)
        if len(state.skipped) > SYNC_SHOWN:
            err.print(f"  ... and {len(state.skipped) - SYNC_SHOWN} more", highlight=False)
        if not state.complete:
            incomplete += 1
            err.print(
                f"  {f.name}: {state.refused} line(s) not stored"
                + (f"; run {state.run_id} left open" if state.withheld else ""),
                highlight=False,
                markup=False,
            )
    if incomplete:
        raise _fail(f"{incomplete} of {len(files)} spool(s) not completely stored", 1)


import_app = typer.Typer(help="Runs from other trackers into bnlab.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("tensorboard")
def import_tensorboard(
    logdir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="A TensorBoard log folder (searched below)."
    ),
    url: str = URL,
    token: str | None = TOKEN,
    tag: list[str] = typer.Option([], help="Tags for the imported runs (repeatable)."),
) -> None:
    """Read TensorBoard event files into bnlab runs, one per folder holding them, so old runs
    can be compared next to new ones. Safe to repeat: a folder imported again is the same run,
    each point stored once."""
    from bnlab.sdk.run import spool_dir
    from bnlab.sdk.transport import Unreachable

    with _needs("integrations", "import tensorboard"):
        from bnlab.integrations.tensorboard import import_logdir
    try:
        done = import_logdir(logdir, url, token, spool_dir=spool_dir() / "imports", tags=tag)
    except Unreachable as exc:
        raise _fail(f"cannot reach {url}: {exc}", 1) from exc
    if not done:
        raise _fail(f"no TensorBoard event files (events.out.tfevents.*) under {logdir}")
    refused = 0
    for run, state in done:
        console.print(
            f"{run.name}: run {state.run_id}: {len(run.steps)} steps of {len(run.names)} "
            f"scalars, {state.finished or 'not finished'} ({url.rstrip('/')}/runs/{state.run_id})",
            highlight=False,
            markup=False,
        )
        for reason in state.skipped:
            err.print(f"  refused: {reason}", highlight=False, markup=False)
        refused += bool(state.skipped)
    if refused:
        raise _fail(f"{refused} of {len(done)} run(s) not completely stored", 1)


@db_app.command("upgrade")
def db_upgrade(
    database_url: str | None = typer.Option(
        None, help="Default: BNLAB_DATABASE_URL, else SQLite in the data dir."
    ),
) -> None:
    """Apply the Alembic migrations (create or bring the schema to head)."""
    with _needs("server", "db upgrade"):
        from backend.db.migrate import upgrade
        from backend.settings import settings

    url = database_url or settings.database_url
    upgrade(url)
    console.print(f"database at head: {_redact(url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url  # the server extra: only db upgrade gets here

    return make_url(url).render_as_string(hide_password=True)


DATA_DIR = typer.Option(None, help="Data directory (default: BNLAB_DATA_DIR, else ~/.bnlab).")
DATABASE_URL = typer.Option(None, help="Default: BNLAB_DATABASE_URL, else SQLite in the data dir.")


def _server_env(data_dir: Path | None, database_url: str | None) -> None:
    """Point the server settings at a deployment before they are first read (as serve does):
    the operations commands run on the server host, with its environment or these options."""
    if data_dir is not None:
        os.environ["BNLAB_DATA_DIR"] = str(data_dir.expanduser().resolve())
    if database_url:
        os.environ["BNLAB_DATABASE_URL"] = database_url


@app.command()
def gc(
    older_than: str = typer.Option(
        ..., help="Age: runs that ended longer ago than this, e.g. 90d, 12h, 2w (plain: days)."
    ),
    status: str = typer.Option(
        "failed,cancelled,crashed", help="Ended statuses to collect (comma-separated) or all."
    ),
    uploads: bool = typer.Option(
        True, "--uploads/--keep-uploads", help="Also uploaded datasets no remaining run uses."
    ),
    dry_run: bool = typer.Option(
        True, "--dry-run/--delete", help="Print what would be deleted (the default), or delete it."
    ),
    data_dir: Path | None = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Retention: ended runs of --status older than --older-than with their series, exports
    and checkpoints; files no run needs; uploads no run uses; sweeps left empty. Prints the
    plan and deletes nothing unless --delete is given."""
    _server_env(data_dir, database_url)
    with _needs("server", "gc"):
        from sqlalchemy.exc import OperationalError

        from backend import ops
        from backend.artifacts import get_store
        from backend.db.session import get_sessionmaker
    try:
        age, statuses = ops.parse_age(older_than), ops.parse_statuses(status)
    except ops.OpsError as exc:
        raise _fail(str(exc)) from None
    store = get_store()
    try:
        with get_sessionmaker()() as session:
            plan = ops.plan_gc(
                session=session, store=store, older_than=age, statuses=statuses, uploads=uploads
            )
            for line in ops.describe_plan(plan):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
            if dry_run:
                console.print("dry run: nothing deleted (--delete deletes the above)")
                return
            done = ops.apply_gc(session=session, store=store, plan=plan)
    except OperationalError as exc:
        raise _fail(f"cannot reach the database: {exc.orig}", 1) from None
    console.print(
        f"deleted {done.runs} runs, {done.files} files ({done.bytes} bytes), "
        f"{done.uploads} uploads, {done.sweeps} sweeps",
        highlight=False,
    )
    for note in done.skipped:
        err.print(f"  skipped {note}", highlight=False, markup=False)


@app.command()
def backup(
    folder: Path = typer.Argument(..., file_okay=False, help="A new (or empty) folder."),
    artifacts: bool = typer.Option(
        True, "--artifacts/--no-artifacts", help="Also the store's checkpoints, exports, uploads."
    ),
    data_dir: Path | None = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Back up the database (pg_dump, or SQLite's online backup) and then the artifact store
    (folder or S3 bucket) into FOLDER, with a manifest of row counts and file checksums. Safe
    while the server runs. docs/operations.md has the procedure."""
    _server_env(data_dir, database_url)
    with _needs("server", "backup"):
        from sqlalchemy.exc import OperationalError

        from backend import ops
        from backend.artifacts import get_store
        from backend.settings import settings
    try:
        done = ops.backup(
            url=settings.database_url, store=get_store(), folder=folder, artifacts=artifacts
        )
    except ops.OpsError as exc:
        raise _fail(str(exc), 1) from None
    except OperationalError as exc:
        raise _fail(f"cannot reach the database: {exc.orig}", 1) from None
    console.print(
        f"backed up {done.database} ({done.counts.get('runs', 0)} runs, "
        f"{sum(done.counts.values())} rows) and {done.files} files ({done.bytes} bytes) "
        f"to {done.folder}",
        highlight=False,
    )


@app.command()
def restore(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="A `bnlab backup`."),
    data_dir: Path | None = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Restore a backup into a fresh database (one without runs) and artifact store, then
    migrate it to this version. Stop the API and workers of the target first."""
    _server_env(data_dir, database_url)
    with _needs("server", "restore"):
        from sqlalchemy.exc import OperationalError

        from backend import ops
        from backend.artifacts import get_store
        from backend.settings import settings
    try:
        done = ops.restore(url=settings.database_url, store=get_store(), folder=folder)
    except ops.OpsError as exc:
        raise _fail(str(exc), 1) from None
    except OperationalError as exc:
        raise _fail(f"cannot reach the database: {exc.orig}", 1) from None
    console.print(
        f"restored {done.counts.get('runs', 0)} runs ({sum(done.counts.values())} rows) and "
        f"{done.files} files into {_redact(settings.database_url)}; schema at {done.revision}",
        highlight=False,
    )


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
