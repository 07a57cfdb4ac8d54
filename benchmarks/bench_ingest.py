"""Ingest speed: layer-stat rows per second into PostgreSQL through `insert_points` (the path
the worker's DbSink uses), next to MLflow's `log_batch` measured on the same machine.

    python benchmarks/bench_ingest.py [--steps 2500] [--layers 8] [--mlflow-python PY]

A layer-stat row holds 8 values (train/running/eval mean and var, shift, grad norm); in MLflow
each value is one metric entry, so MLflow's rows/s = its metric entries/s / 8. MLflow runs in
its own virtualenv (it pins its own SQLAlchemy/alembic), pointed at with --mlflow-python, e.g.

    python -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow==3.17.2
    python benchmarks/bench_ingest.py --mlflow-python /tmp/mlflow-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session

from backend.crud.ingest import insert_points
from backend.db.models import LAYER_KEYS
from backend.db.session import make_engine
from bnlab.core.schema.records import ProbeRecord

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' scratch-database helper (tests/ is not installed)
from tests.utils.runs import add_bare_run  # noqa: E402
from tests.worker.procs import scratch_pg_database  # noqa: E402

ADMIN = os.environ.get("BNLAB_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def make_records(steps: int, layers: int) -> list[ProbeRecord]:
    """Probe records like the engine's, with distinct values per row."""
    return [
        ProbeRecord(
            s,
            steps,
            {"epoch": s / 100, "train_loss": 1 / (s + 1), "val_acc": 0.9},
            [
                {
                    "index": i,
                    "name": f"blocks.{i}.bn",
                    **{k: s * 1e-3 + i + j * 0.1 for j, k in enumerate(LAYER_KEYS)},
                }
                for i in range(layers)
            ],
        )
        for s in range(steps)
    ]


def bench_bnlab(
    url: str, records: list[dict], batch_steps: int, repeats: int, resend: bool = False
) -> list[float]:
    """Layer rows/s, one transaction per batch (as a DbSink flush). resend=False: a fresh run
    appending (COPY straight in); resend=True: the same points written again (the upsert path
    a retried flush or a resumed run takes)."""
    engine = make_engine(url)
    rates = []
    for _ in range(repeats):
        with Session(engine) as s, s.begin():
            run_id = add_bare_run(s, name="bench").id
        if resend:
            with Session(engine) as s, s.begin():
                insert_points(session=s, run_id=run_id, records=records)
        rows = 0
        t0 = time.perf_counter()
        for k in range(0, len(records), batch_steps):
            with Session(engine) as s, s.begin():
                rows += insert_points(
                    session=s, run_id=run_id, records=records[k : k + batch_steps]
                )[1]
        rates.append(rows / (time.perf_counter() - t0))
    engine.dispose()
    return rates


MLFLOW_SCRIPT = r"""
import json, sys, time
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
uri, steps, layers, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keys = ["train_mean", "train_var", "running_mean", "running_var",
        "eval_mean", "eval_var", "shift", "grad_norm"]
client = MlflowClient(tracking_uri=uri)
exp = client.create_experiment(f"bench-{time.time()}")
rates = []
for _ in range(repeats):
    run_id = client.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(f"l{i}/{k}", s * 1e-3 + i + j * 0.1, ts, s)
               for s in range(steps) for i in range(layers) for j, k in enumerate(keys)]
    t0 = time.perf_counter()
    for k in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics per call
        client.log_batch(run_id, metrics=metrics[k:k + 1000])
    rates.append(len(metrics) / len(keys) / (time.perf_counter() - t0))
print(json.dumps({"version": mlflow.__version__, "rates": rates}))
"""


def bench_mlflow(python: str, steps: int, layers: int, repeats: int) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        out = subprocess.run(
            [python, "-c", MLFLOW_SCRIPT, uri, str(steps), str(layers), str(repeats)],
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "false"},
        )
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000, help="probe steps per run")
    ap.add_argument("--layers", type=int, default=8, help="BN layers per probe step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mlflow-python", default=None, help="python of a venv with mlflow")
    ap.add_argument("--mlflow-steps", type=int, default=250, help="MLflow is slow: fewer steps")
    args = ap.parse_args()

    with scratch_pg_database(ADMIN, prefix="bnlab_wk_bench_") as url:
        records = make_records(args.steps, args.layers)
        print(
            f"bnlab insert_points → PostgreSQL, {args.steps} steps x {args.layers} layers "
            f"= {args.steps * args.layers} layer rows per run, fresh run each repeat"
        )
        results = {}
        for resend in (False, True):
            print("  " + ("re-sent points (upsert path)" if resend else "new points (append path)"))
            for batch in (25, 250, 2500):
                rates = bench_bnlab(url, records, batch, args.repeats, resend)
                if not resend:
                    results[batch] = statistics.median(rates)
                print(
                    f"    batch of {batch:>4} probe steps ({batch * args.layers:>5} rows/flush):"
                    f" median {statistics.median(rates):>9,.0f} rows/s, best {max(rates):>9,.0f}"
                    "  (runs: " + ", ".join(f"{r:,.0f}" for r in rates) + ")"
                )
    if not args.mlflow_python:
        print("MLflow: not measured (pass --mlflow-python PATH to a venv with mlflow)")
        return
    ml = bench_mlflow(args.mlflow_python, args.mlflow_steps, args.layers, args.repeats)
    if ml is None:
        print("MLflow: failed to run (see stderr)")
        return
    ml_rate = statistics.median(ml["rates"])
    print(
        f"MLflow {ml['version']} log_batch → SQLite store, {args.mlflow_steps} steps x "
        f"{args.layers} layers x 8 values: median {ml_rate:,.0f} rows/s (runs: "
        + ", ".join(f"{r:,.0f}" for r in ml["rates"])
        + ")"
    )
    best = max(results.values())
    print(f"ratio bnlab (median of its best batch size) / MLflow median: {best / ml_rate:,.1f}x")


if __name__ == "__main__":
    main()
