"""API read speed on PostgreSQL, through a real uvicorn server on loopback.

Targets (issue 3): GET /api/runs/{id}/layers for a run of 8 layers x 1000 steps under 20 ms;
the 20 runs a compare view needs (per run: the run, its metrics and its layers with
max_points=1000 and keys=train_var,eval_var,running_var,shift, as frontend/js/compare.js
asks) under 150 ms in total. The all-layer-keys compare view is also reported, labelled.

    python benchmarks/bench_api.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

Creates a scratch database `bnlab_api_bench_<pid>`, fills it, serves it, measures, drops it.
"Cold" requests miss the API's cache of ended runs' series (each pass uses a max_points value
not asked before, >= the 1000 stored steps, so the same points come back): database read,
decode and JSON encoding every time. "Warm" requests are answered from that cache.
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

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.db.migrate import upgrade
from backend.db.models import LAYER_KEYS, METRIC_KEYS, LayerStat, Run, RunMetric


def scratch_db(admin_url: str, name: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def drop_db(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fill(url: str, runs: int, layers: int, steps: int) -> list[int]:
    """`runs` succeeded runs, each with `steps` probe steps of metrics and of `layers` layers."""
    engine = create_engine(url)
    ids = []
    with Session(engine) as session:
        for r in range(runs):
            run = Run(name=f"bench {r}", status="succeeded", config={"name": f"bench {r}"}, tags=[],
                      progress=1.0, step=steps * 20, attempt=1, cancel_requested=False,
                      layer_names=[f"blocks.{i}.bn" for i in range(layers)])
            session.add(run)
            session.flush()
            ids.append(run.id)
            session.execute(insert(RunMetric), [
                {"run_id": run.id, "step": 20 * s, **{k: 1.0 / (s + 1) + r for k in METRIC_KEYS}}
                for s in range(steps)])
            session.execute(insert(LayerStat), [
                {"run_id": run.id, "layer": i, "step": 20 * s, **{k: 1.0 + s * 1e-3 + i for k in LAYER_KEYS}}
                for i in range(layers) for s in range(steps)])
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
    env = {**os.environ, "BNLAB_DATABASE_URL": url, "BNLAB_DATA_DIR": data_dir,
           "BNLAB_BROKER_URL": os.environ.get("BNLAB_BENCH_BROKER", "redis://127.0.0.1:6379/1")}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "backend.api.main:app", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/presets", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("uvicorn did not start")


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far, in ms (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


# The layer keys frontend/js/compare.js asks for (`?keys=` on /layers); None = all keys.
DASHBOARD_KEYS = "train_var,eval_var,running_var,shift"


def compare_view(client: httpx.Client, ids: list[int], pool: ThreadPoolExecutor | None,
                 max_points: int = 1000, keys: str | None = DASHBOARD_KEYS) -> None:
    layer_query = f"?keys={keys}&max_points={max_points}" if keys else f"?max_points={max_points}"
    paths = [p for i in ids for p in (f"/api/runs/{i}", f"/api/runs/{i}/metrics?max_points={max_points}",
                                      f"/api/runs/{i}/layers{layer_query}")]
    def get(path: str) -> None:
        client.get(path).raise_for_status()
    if pool is None:
        for path in paths:
            get(path)
    else:
        list(pool.map(get, paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BNLAB_TEST_PG",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    name = f"bnlab_api_bench_{os.getpid()}"
    url = scratch_db(args.pg, name)
    proc = None
    try:
        ids = fill(url, args.runs, args.layers, args.steps)
        with tempfile.TemporaryDirectory() as data_dir:
            proc, base = serve(url, data_dir)
            with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(6) as pool:
                body = client.get(f"/api/runs/{ids[0]}/layers").json()
                assert len(body["layers"]) == args.layers and len(body["layers"][0]["step"]) == args.steps
                for _ in range(3):  # warm up connections (and the cache for max_points=1000)
                    compare_view(client, ids, pool)
                fresh = iter(range(args.steps + 1, 10**6))  # a new cache key every cold request
                cpu0 = cpu_ms(proc.pid)
                cold = [timed(lambda: client.get(f"/api/runs/{ids[0]}/layers?max_points={next(fresh)}")
                              .raise_for_status()) for _ in range(args.repeat)]
                cpu_cold = (cpu_ms(proc.pid) - cpu0) / args.repeat
                warm = [timed(lambda: client.get(f"/api/runs/{ids[0]}/layers?max_points=1000")
                              .raise_for_status()) for _ in range(args.repeat)]
                n = max(3, args.repeat // 5)
                cpu0 = cpu_ms(proc.pid)
                for _ in range(n):
                    compare_view(client, ids, None, next(fresh))
                cpu_view = (cpu_ms(proc.pid) - cpu0) / n
                views = {
                    "cold, 6 connections": [timed(lambda: compare_view(client, ids, pool, next(fresh))) for _ in range(n)],
                    "cold, 1 connection": [timed(lambda: compare_view(client, ids, None, next(fresh))) for _ in range(n)],
                    "warm, 6 connections": [timed(lambda: compare_view(client, ids, pool)) for _ in range(n)],
                    "warm, 1 connection": [timed(lambda: compare_view(client, ids, None)) for _ in range(n)],
                    "cold, 6 connections, all layer keys":
                        [timed(lambda: compare_view(client, ids, pool, next(fresh), None)) for _ in range(n)],
                }
        report(args, cold, warm, views)
        print(f"API process CPU time (load-independent): cold layers request {cpu_cold:.1f} ms, "
              f"cold compare view {cpu_view:.0f} ms (PostgreSQL's own CPU not included)")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        drop_db(args.pg, name)


def report(args, cold: list[float], warm: list[float], views: dict[str, list[float]]) -> None:
    med = statistics.median
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f} (2 cores, shared with other work)")
    for label, times in (("cold", cold), ("warm", warm)):
        print(f"GET /api/runs/{{id}}/layers {label} ({args.layers} layers x {args.steps} steps, PostgreSQL): "
              f"median {med(times):.1f} ms, best {min(times):.1f} ms "
              f"(target < 20 ms: ratio {med(times) / 20:.2f})")
    for label, times in views.items():
        print(f"compare view {label}, {args.runs} runs x (run + metrics + layers): median "
              f"{med(times):.0f} ms, best {min(times):.0f} ms (target < 150 ms: ratio {med(times) / 150:.2f})")


if __name__ == "__main__":
    main()
