"""What every benchmark shares: services of its own (never the tests'), a start-up wait that
survives a loaded machine, and the figures that benchmarks/run_all.py collects into
docs/performance-table.md.

Services, each overridable from the environment (the names follow tests/utils/services.py,
with BENCH where the tests have TEST):

    BNLAB_BENCH_PG       PostgreSQL admin URL: where CREATE / DROP DATABASE run. Default: the
                         server of BNLAB_TEST_PG (127.0.0.1:5432, user postgres) with its
                         `postgres` database. The tests' own database (`test`) is never used,
                         not even as the admin connection.
    BNLAB_BENCH_REDIS    the Redis database of a benchmark server with a Redis broker;
                         default redis://127.0.0.1:6379/12 (the tests use 1, 2 and 6-15 per
                         helper only when they are told to; flushed only by this module's
                         flush_redis, one database, never the server)
    BNLAB_BENCH_START_S  seconds a server may take to answer its health URL (default 180: on a
                         loaded 2-core machine uvicorn took more than 30 s to import)

Every scratch database is named bnlab_bench_<pid>[_<what>]: a benchmark creates it, migrates
it, and drops it when it ends (also on an error), so a benchmark runs beside the test suite.

Figures: a benchmark given `--figures PATH` writes there what it measured, one entry per
figure, each with the machine's load average at the moment it was measured (the table shows it
beside the figure: on a shared machine the load explains much of a figure's spread).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bnlab_bench_"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
TEST_DATABASES = ("test",)  # the tests' admin database; their scratch ones are bnlab_api_* etc.


def admin_url() -> str:
    """The PostgreSQL URL where benchmarks create and drop their databases."""
    chosen = os.environ.get("BNLAB_BENCH_PG")
    if chosen:
        url = make_url(chosen)
    else:  # the tests' server, but its `postgres` database, not the tests' `test`
        base = os.environ.get("BNLAB_TEST_PG") or "postgresql+psycopg://postgres@127.0.0.1:5432/x"
        url = make_url(base).set(database="postgres")
    if url.database in TEST_DATABASES:
        raise SystemExit(
            f"BNLAB_BENCH_PG names the tests' database {url.database!r}: benchmarks need an "
            "admin database of their own (e.g. postgres)"
        )
    return url.render_as_string(hide_password=False)


def database_name(what: str = "") -> str:
    """bnlab_bench_<pid>[_<what>]: unique per process, never a test's name."""
    return f"{PREFIX}{os.getpid()}" + (f"_{what}" if what else "")


def _admin(sql: str) -> None:
    engine = create_engine(admin_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def create_database(name: str, *, migrate: bool = True) -> str:
    """Create (afresh) and migrate the scratch database `name`; returns its URL."""
    if not name.startswith(PREFIX):
        raise ValueError(f"a benchmark database is named {PREFIX}*, not {name!r}")
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    if migrate:
        from backend.db.migrate import upgrade

        upgrade(url)
    return url


def drop_database(name: str) -> None:
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a benchmark database")
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(what: str = "", *, migrate: bool = True) -> Iterator[str]:
    """A fresh database bnlab_bench_<pid>[_<what>] at head, dropped afterwards."""
    name = database_name(what)
    url = create_database(name, migrate=migrate)
    try:
        yield url
    finally:
        drop_database(name)


def redis_url() -> str:
    return os.environ.get("BNLAB_BENCH_REDIS") or DEFAULT_REDIS


def flush_redis(url: str | None = None) -> None:
    """Empty the benchmarks' Redis database (one database, never the whole server)."""
    import redis

    client = redis.Redis.from_url(url or redis_url(), socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


def start_seconds() -> float:
    return float(os.environ.get("BNLAB_BENCH_START_S") or 180)


def wait_for_health(
    url: str,
    *,
    what: str,
    proc: subprocess.Popen | None = None,
    deadline_s: float | None = None,
    log_path: Path | None = None,
) -> float:
    """Wait until GET `url` answers 200; returns the seconds waited and says what it waited for.

    `proc`: the server's process; its exit ends the wait at once (with its log's tail). On a
    loaded machine a server takes far longer to import than on an idle one: the default
    deadline is generous (BNLAB_BENCH_START_S, 180 s), and the message names what was awaited.
    """
    import httpx

    deadline_s = start_seconds() if deadline_s is None else deadline_s
    print(f"waiting up to {deadline_s:.0f} s for {what} to answer {url}", flush=True)
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < deadline_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} before answering {url}{_tail(log_path)}"
            )
        try:
            res = httpx.get(url, timeout=5.0)
            if res.status_code == 200:
                waited = time.monotonic() - t0
                print(f"{what} answered {url} after {waited:.1f} s", flush=True)
                return waited
            last = f"HTTP {res.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise RuntimeError(
        f"{what} did not answer {url} within {deadline_s:.0f} s (last: {last}; load average "
        f"{load()[0]:.1f}; set BNLAB_BENCH_START_S to wait longer){_tail(log_path)}"
    )


def _tail(path: Path | None, n: int = 30) -> str:
    if path is None:
        return ""
    try:
        return "\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def load() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages now."""
    return os.getloadavg()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


class Figures:
    """What one benchmark measured, for run_all.py's table: `add()` each figure as it is
    measured (the load average is read then), `write()` at the end. Without a path (the
    benchmark run by hand without --figures) it only keeps them."""

    def __init__(self, bench: str, path: Path | str | None, command: str | None = None) -> None:
        self.bench, self.path = bench, Path(path) if path else None
        self.command = command or " ".join(["python", *_argv()])
        self.items: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add(
        self,
        what: str,
        value: float | int | str | None,
        unit: str = "",
        *,
        spread: str = "",
        target: str = "",
        met: bool | None = None,
        baseline: str = "",
    ) -> None:
        """One figure. spread: e.g. "[1.01, 1.04]"; target: the issue's, in words
        ("≤ 1.03"); met: whether this figure meets it (None: no target or not decidable)."""
        self.items.append(
            {
                "what": what,
                "value": value,
                "unit": unit,
                "spread": spread,
                "target": target,
                "met": met,
                "baseline": baseline,
                "load": [round(x, 2) for x in load()],
                "at": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
        if self.path is not None:  # written as it goes: a later failure keeps what was measured
            self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.path is not None:
            self.write()

    def write(self) -> None:
        if self.path is None:
            return
        body = {
            "bench": self.bench,
            "command": self.command,
            "figures": self.items,
            "notes": self.notes,
        }
        self.path.write_text(json.dumps(body, indent=1))


def _argv() -> list[str]:
    args = list(sys.argv)
    if args:
        try:
            args[0] = str(Path(args[0]).resolve().relative_to(ROOT))
        except ValueError:
            pass
    out, skip = [], False
    for a in args:  # the command as a reader reruns it: without run_all's --figures file
        if skip:
            skip = False
            continue
        if a == "--figures":
            skip = True
            continue
        if a.startswith("--figures="):
            continue
        out.append(a)
    return out


def add_figures_argument(parser) -> None:  # noqa: ANN001 - argparse.ArgumentParser
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="write the figures here as JSON (benchmarks/run_all.py collects them)",
    )


def ratio_cell(values: list[float]) -> tuple[float, str]:
    """(median, "[min, max]") of a list of ratios."""
    import statistics

    return statistics.median(values), f"[{min(values):.3f}, {max(values):.3f}]"
