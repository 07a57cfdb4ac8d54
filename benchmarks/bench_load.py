"""Load on the embedded default: 50 concurrent readers while two runs train (issue 7.4).

Starts `bnlab serve --workers 2` (SQLite in WAL mode, filesystem broker) on a free loopback
port with a private data directory, seeds 10 finished runs (8 layers x 1000 steps), submits
two training runs, then lets 50 client threads read the runs list, run rows, metrics and
layers (downsampled, as the dashboard asks) for a bounded time. Every request must succeed.

    python benchmarks/bench_load.py [--clients 50] [--seconds 30]

Prints p50/p99 latency per endpoint and the error count; exits 1 on any error.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "frontend")]
import benchlib  # noqa: E402
from dashboard_stack import seed_runs, start_stack  # noqa: E402

TRAINING = {  # long enough to keep both workers busy for the whole measurement
    "name": "load: training",
    "dataset": {"name": "mnist1d", "n_samples": 20000},
    "model": {"widths": [256, 256, 256]},
    "train": {"epochs": 100, "device": "cpu"},
    "probe": {"every_steps": 10},
}


def reader(client, ids, stop, lat, errors) -> None:  # noqa: ANN001
    rng = random.Random(threading.get_ident())
    while not stop.is_set():
        run_id = rng.choice(ids)
        path, label = rng.choice(
            [
                ("/api/runs?limit=50", "GET /api/runs"),
                (f"/api/runs/{run_id}", "GET /api/runs/{id}"),
                (f"/api/runs/{run_id}/metrics?max_points=1000", "GET metrics"),
                (f"/api/runs/{run_id}/layers?max_points=1000", "GET layers"),
            ]
        )
        t0 = time.perf_counter()
        try:
            res = client.get(path)
            ok = res.status_code == 200
        except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
            ok, res = False, exc
        lat[label].append(time.perf_counter() - t0)
        if not ok:
            errors.append(f"{label}: {getattr(res, 'status_code', res)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    benchlib.add_figures_argument(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bnlab-load-") as tmp:
        # SQLite and the embedded broker in a private data directory: no shared service
        print(f"waiting up to {benchlib.start_seconds():.0f} s for bnlab serve's /api/health")
        stack = start_stack(Path(tmp), workers=2, timeout_s=benchlib.start_seconds())
        try:
            ids = seed_runs(stack.database_url, n_runs=10, n_layers=8, n_steps=1000)
            with stack.client() as c:
                ids += [c.post("/api/runs", json=TRAINING).json()["id"] for _ in range(2)]
                # wait until both are really training (the workers import torch: slow when loaded)
                print(f"waiting up to {benchlib.start_seconds():.0f} s for both runs to train")
                deadline = time.monotonic() + benchlib.start_seconds()
                while time.monotonic() < deadline:
                    if all(c.get(f"/api/runs/{i}").json()["status"] == "running" for i in ids[-2:]):
                        break
                    time.sleep(0.5)
                else:
                    print("the two training runs did not start", file=sys.stderr)
                    return 1
            lat: dict[str, list[float]] = defaultdict(list)
            errors: list[str] = []
            stop = threading.Event()
            clients = [stack.client() for _ in range(args.clients)]
            threads = [
                threading.Thread(target=reader, args=(cl, ids, stop, lat, errors)) for cl in clients
            ]
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            with stack.client() as c:
                statuses = [c.get(f"/api/runs/{i}").json()["status"] for i in ids[-2:]]
                for i in ids[-2:]:
                    c.post(f"/api/runs/{i}/cancel")
        finally:
            stack.stop()
    everything = [x for xs in lat.values() for x in xs]
    print(
        f"{args.clients} clients x {args.seconds:.0f} s, 2 runs training ({statuses}), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'endpoint':<22}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for label, xs in sorted(lat.items()) + [("all", everything)]:
        q = statistics.quantiles(xs, n=100)
        print(f"{label:<22}{len(xs):>10}{1e3 * statistics.median(xs):>10.1f}{1e3 * q[98]:>10.1f}")
    print(f"errors: {len(errors)}" + (f" (first: {errors[:3]})" if errors else ""))
    out = benchlib.Figures("load", args.figures)
    q = statistics.quantiles(everything, n=100)
    out.add(
        f"{args.clients} client threads x {args.seconds:.0f} s against bnlab serve --workers 2 "
        "(SQLite) while two runs train: failed requests",
        len(errors),
        f"of {len(everything)}",
        target="0",
        met=not errors,
    )
    out.add(
        "… latency over all endpoints, p50 / p99",
        f"{1e3 * statistics.median(everything):.0f} / {1e3 * q[98]:.0f}",
        "ms",
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
