"""API read speed on PostgreSQL, through a real uvicorn server on loopback.

Targets (issue 3): GET /api/runs/{id}/layers for a run of 8 layers x 1000 steps under 20 ms;
the 20 runs a compare view needs under 150 ms in total. The dashboard (frontend/js/views/compare.js)
loads a compare view with ONE request, GET /api/compare?runs=...&layer_keys=train_var,eval_var,
running_var,shift&max_points=1000; that is the figure against the target. The old way, 60
requests (per run: the run, its metrics and its layers with the same keys and max_points), is
still reported, labelled "60 requests".

    python benchmarks/bench_api.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Creates a scratch database `bnlab_bench_<pid>_api` (on the server of --pg, default
BNLAB_BENCH_PG: benchmarks/benchlib.py), fills it with ended runs, serves it (broker: the
benchmarks' Redis database, BNLAB_BENCH_REDIS, db 12), measures, drops it. Every figure is
the median (and best) over several passes.
- "warm": answered from the API's in-memory cache of ended runs' encoded series.
- "cold": that cache missed (each pass uses a max_points value not asked before, >= the 1000
  stored steps, so the same points come back): database read, decode and JSON encoding every
  time. The series come from the database's packed copies (table series_packs), which the
  worker writes when it records a run's end (the API's reconciler packs runs that ended
  without a worker within one sweep, 15 s; else their first read does).
- "first read": cold AND no packed copy (series_packs emptied before each pass): the rows are
  aggregated and the packs written, as when a run that ended without a worker (cancelled
  while queued, reaped) is read before the reconciler packed it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.orm import Session

from backend.db.models import LAYER_KEYS, METRIC_KEYS, LayerStat, Run, RunMetric

ROOT = Path(__file__).resolve().parents[1]


def scratch_db(admin_url: str, name: str) -> str:
    """Create and migrate the benchmark's own database `name` (bnlab_bench_<pid>_...) on the
    server of admin_url (benchlib: never the tests' database)."""
    os.environ["BNLAB_BENCH_PG"] = admin_url
    return benchlib.create_database(name)


def drop_db(admin_url: str, name: str) -> None:
    os.environ["BNLAB_BENCH_PG"] = admin_url
    benchlib.drop_database(name)


def fill(url: str, runs: int, layers: int, steps: int) -> list[int]:
    """`runs` succeeded runs, each with `steps` probe steps of metrics and of `layers` layers."""
    engine = create_engine(url)
    ids = []
    with Session(engine) as session:
        for r in range(runs):
            run = Run(
                name=f"bench {r}",
                status="succeeded",
                config={"name": f"bench {r}"},
                tags=[],
                progress=1.0,
                step=steps * 20,
                attempt=1,
                cancel_requested=False,
                layer_names=[f"blocks.{i}.bn" for i in range(layers)],
            )
            session.add(run)
            session.flush()
            ids.append(run.id)
            session.execute(
                insert(RunMetric),
                [
                    {
                        "run_id": run.id,
                        "step": 20 * s,
                        **{k: 1.0 / (s + 1) + r for k in METRIC_KEYS},
                    }
                    for s in range(steps)
                ],
            )
            session.execute(
                insert(LayerStat),
                [
                    {
                        "run_id": run.id,
                        "layer": i,
                        "step": 20 * s,
                        **{k: 1.0 + s * 1e-3 + i for k in LAYER_KEYS},
                    }
                    for i in range(layers)
                    for s in range(steps)
                ],
            )
        session.commit()
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    engine.dispose()
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "BNLAB_DATABASE_URL": url,
        "BNLAB_DATA_DIR": data_dir,
        "BNLAB_BROKER_URL": os.environ.get("BNLAB_BENCH_BROKER") or benchlib.redis_url(),
        # One reconciler pass at start-up (it packs the ended runs), none while measuring:
        # a pass could pack the runs between the "first read" passes' emptying and reading.
        "BNLAB_RECONCILE_S": "3600",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "backend.api.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        benchlib.wait_for_health(f"{base}/api/health", what="uvicorn (the API)", proc=proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, base


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far, in ms (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


# The layer keys frontend/js/views/compare.js asks for; None = all keys.
DASHBOARD_KEYS = "train_var,eval_var,running_var,shift"


def compare_view(
    client: httpx.Client, ids: list[int], max_points: int = 1000, keys: str | None = DASHBOARD_KEYS
) -> None:
    """The compare view as the dashboard loads it: one GET /api/compare."""
    query = {"runs": ",".join(map(str, ids)), "max_points": max_points}
    if keys:
        query["layer_keys"] = keys
    client.get("/api/compare", params=query).raise_for_status()


def compare_view_60(
    client: httpx.Client,
    ids: list[int],
    pool: ThreadPoolExecutor | None,
    max_points: int = 1000,
    keys: str | None = DASHBOARD_KEYS,
) -> None:
    """The compare view as the dashboard loaded it before GET /api/compare: 3 requests per run."""
    layer_query = f"?keys={keys}&max_points={max_points}" if keys else f"?max_points={max_points}"
    paths = [
        p
        for i in ids
        for p in (
            f"/api/runs/{i}",
            f"/api/runs/{i}/metrics?max_points={max_points}",
            f"/api/runs/{i}/layers{layer_query}",
        )
    ]

    def get(path: str) -> None:
        client.get(path).raise_for_status()

    if pool is None:
        for path in paths:
            get(path)
    else:
        list(pool.map(get, paths))


def passes(fn, n: int, before=None) -> list[float]:
    """Wall times of `n` calls of fn, in ms; `before` runs untimed ahead of each."""
    times = []
    for _ in range(n):
        if before is not None:
            before()
        times.append(timed(fn))
    return times


def check(client: httpx.Client, ids: list[int], args) -> None:
    """The served answers have the filled shape (a benchmark of empty answers proves nothing)."""
    body = client.get(f"/api/runs/{ids[0]}/layers").json()
    assert len(body["layers"]) == args.layers and len(body["layers"][0]["step"]) == args.steps
    runs = client.get("/api/compare", params={"runs": ",".join(map(str, ids))}).json()["runs"]
    assert [r["run"]["id"] for r in runs] == ids
    assert all(
        len(r["layers"]["layers"]) == args.layers and len(r["metrics"]["step"]) == args.steps
        for r in runs
    )


def measure(
    client: httpx.Client, pool: ThreadPoolExecutor, ids: list[int], args, url: str, pid: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    fresh = iter(range(args.steps + 1, 10**6))  # a new cache key every cold request
    engine = create_engine(url)

    def drop_packs() -> None:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM series_packs"))

    def layers(max_points: int | None = None) -> None:
        client.get(
            f"/api/runs/{ids[0]}/layers?max_points={max_points or next(fresh)}"
        ).raise_for_status()

    n, cpu = max(3, args.repeat // 5), {}
    cpu0 = cpu_ms(pid)
    layer_times = {"cold": passes(layers, args.repeat)}
    cpu["cold layers request"] = (cpu_ms(pid) - cpu0) / args.repeat
    layer_times["warm"] = passes(lambda: layers(1000), args.repeat)
    layer_times["first read (no pack)"] = passes(layers, n, drop_packs)
    cpu0 = cpu_ms(pid)
    views = {"GET /api/compare, cold": passes(lambda: compare_view(client, ids, next(fresh)), n)}
    cpu["cold GET /api/compare"] = (cpu_ms(pid) - cpu0) / n
    views["GET /api/compare, warm"] = passes(lambda: compare_view(client, ids), n)
    views["GET /api/compare, first read (no packs)"] = passes(
        lambda: compare_view(client, ids, next(fresh)), n, drop_packs
    )
    views["GET /api/compare, cold, all layer keys"] = passes(
        lambda: compare_view(client, ids, next(fresh), None), n
    )
    views["60 requests, 6 connections, cold"] = passes(
        lambda: compare_view_60(client, ids, pool, next(fresh)), n
    )
    views["60 requests, 6 connections, warm"] = passes(
        lambda: compare_view_60(client, ids, pool), n
    )
    views["60 requests, 1 connection, cold"] = passes(
        lambda: compare_view_60(client, ids, None, next(fresh)), n
    )
    views["60 requests, 1 connection, warm"] = passes(lambda: compare_view_60(client, ids, None), n)
    engine.dispose()
    return layer_times, views, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pg", default=None, help="PostgreSQL admin URL (default: BNLAB_BENCH_PG, benchlib)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    benchlib.add_figures_argument(parser)
    args = parser.parse_args()
    args.pg = args.pg or benchlib.admin_url()

    name = benchlib.database_name("api")
    url = scratch_db(args.pg, name)
    proc = None
    try:
        ids = fill(url, args.runs, args.layers, args.steps)
        with tempfile.TemporaryDirectory() as data_dir:
            proc, base = serve(url, data_dir)
            load0 = os.getloadavg()[0]
            with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(6) as pool:
                check(client, ids, args)
                for _ in range(3):  # warm up connections, packs and the cache for max_points=1000
                    compare_view(client, ids)
                    compare_view_60(client, ids, pool)
                layers, views, cpu = measure(client, pool, ids, args, url, proc.pid)
        report(args, load0, layers, views, cpu)
        figures(args, layers, views, cpu)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        drop_db(args.pg, name)


def report(
    args,
    load0: float,
    layers: dict[str, list[float]],
    views: dict[str, list[float]],
    cpu: dict[str, float],
) -> None:
    med = statistics.median
    print(
        f"1-min load average: {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
        "(2 cores, shared with other work)"
    )
    for label, times in layers.items():
        print(
            f"GET /api/runs/{{id}}/layers {label} "
            f"({args.layers} layers x {args.steps} steps, PostgreSQL): "
            f"median {med(times):.1f} ms, best {min(times):.1f} ms "
            f"(target < 20 ms: ratio {med(times) / 20:.2f})"
        )
    for label, times in views.items():
        print(
            f"compare view of {args.runs} runs, {label}: median {med(times):.0f} ms, "
            f"best {min(times):.0f} ms (target < 150 ms: ratio {med(times) / 150:.2f})"
        )
    print(
        "API process CPU time (load-independent; PostgreSQL's own CPU not included): "
        + ", ".join(f"{label} {ms:.1f} ms" for label, ms in cpu.items())
    )


def figures(args, layers, views, cpu) -> None:  # noqa: ANN001
    med = statistics.median
    out = benchlib.Figures("api", args.figures)
    size = f"{args.layers} layers x {args.steps} steps"
    for label in ("cold", "warm"):
        value = med(layers[label])
        out.add(
            f"GET /api/runs/{{id}}/layers, {label} ({size})",
            round(value, 1),
            "ms",
            spread=f"best {min(layers[label]):.1f}",
            target="< 20 ms",
            met=value < 20,
        )
    for label in ("GET /api/compare, cold", "GET /api/compare, warm"):
        value = med(views[label])
        out.add(
            f"compare view of {args.runs} runs: {label}",
            round(value),
            "ms",
            spread=f"best {min(views[label]):.0f}",
            target="< 150 ms",
            met=value < 150,
        )
    for label, ms in cpu.items():
        out.add(f"API process CPU per {label}", round(ms, 1), "ms")


if __name__ == "__main__":
    main()
