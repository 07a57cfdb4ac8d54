"""Ingest speed: layer-stat rows per second into PostgreSQL through `insert_points` (the path
the worker's DbSink uses), next to MLflow's `log_batch` measured on the same machine; with
--peers, one series through every peer's client and bnlab's (issue 26 item 4).

    python benchmarks/bench_ingest.py [--steps 2500] [--layers 8] [--mlflow-python PY]
    python benchmarks/bench_ingest.py --peers [--peers-only] [--repeats 3]

A layer-stat row holds 8 values (train/running/eval mean and var, shift, grad norm); in MLflow
each value is one metric entry, so MLflow's rows/s = its metric entries/s / 8. MLflow runs in
another interpreter: this one if it imports mlflow, else --mlflow-python, e.g. a virtualenv
of its own (it pins its own SQLAlchemy/alembic):

    python -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow==3.17.2
    python benchmarks/bench_ingest.py --mlflow-python /tmp/mlflow-venv/bin/python

--peers: the same series, 20 layers x 10 statistics x 100 steps (20,000 values), each way,
wall time from the first value handed over to the last one stored (median of --repeats):
- TensorBoard: torch.utils.tensorboard.SummaryWriter, add_scalar per value, then close()
  (the event file flushed);
- MLflow: MlflowClient.log_batch (1,000 metrics per call, its limit) into a SQLite store and
  into a file store (the run created beforehand, untimed); and get_metric_history of the 200
  series back;
- bnlab, the SDK's path: each probe record appended to a spool file as the SDK does
  (transport.Spool), then the spool sent to a real `bnlab serve` on PostgreSQL
  (transport.sync: read, columns encoding, HTTP, stored); the run's creation is included;
- bnlab, raw REST: the same records pre-encoded in the SDK's columns body, POSTed;
  and GET /api/runs/{id}/layers of the series back.
TensorBoard and MLflow run in fresh interpreters, bnlab's client in this one; the server
(uvicorn + PostgreSQL) shares the machine's cores with the client, as on a workstation.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchlib  # noqa: E402

from tests.utils.runs import add_bare_run  # noqa: E402


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


# ------------------------------------------------------------------ peers (issue 26 item 4)
PEER_LAYERS, PEER_STATS, PEER_STEPS = 20, 10, 100

# Each peer script: argv = out_dir, layers, stats, steps, repeats; prints one JSON line
# {"version", "write_s": [...], "cpu_s": [...], "read_s": [...]?}.
TENSORBOARD_SCRIPT = r"""
import json, sys, tempfile, time
from torch.utils.tensorboard import SummaryWriter
import tensorboard
out, layers, stats, steps, repeats = sys.argv[1], *map(int, sys.argv[2:6])
write, cpu = [], []
for r in range(repeats):
    logdir = tempfile.mkdtemp(dir=out)
    t0, c0 = time.perf_counter(), time.process_time()
    writer = SummaryWriter(logdir)
    for s in range(steps):
        for i in range(layers):
            for k in range(stats):
                writer.add_scalar(f"layer{i}/stat{k}", s * 1e-3 + i + k * 0.1, 20 * (s + 1))
    writer.close()  # the event file flushed to disk
    write.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
print(json.dumps({"version": tensorboard.__version__, "write_s": write, "cpu_s": cpu}))
"""

MLFLOW_PEER_SCRIPT = r"""
import json, os, sys, tempfile, time
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
out, layers, stats, steps, repeats = sys.argv[1], *map(int, sys.argv[2:6])
store = sys.argv[6]
uri = (f"sqlite:///{out}/mlflow.db" if store == "sqlite" else f"file://{out}/mlruns")
client = MlflowClient(tracking_uri=uri)
exp = client.create_experiment(f"peers-{time.time()}")  # the store's set-up: untimed
write, cpu, read = [], [], []
keys = [f"layer{i}/stat{k}" for i in range(layers) for k in range(stats)]
for r in range(repeats):
    run_id = client.create_run(exp).info.run_id  # untimed: a run exists before it logs
    ts = int(time.time() * 1000)
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = [Metric(f"layer{i}/stat{k}", s * 1e-3 + i + k * 0.1, ts, 20 * (s + 1))
               for s in range(steps) for i in range(layers) for k in range(stats)]
    for j in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics per call
        client.log_batch(run_id, metrics=metrics[j:j + 1000])
    write.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
    t0 = time.perf_counter()
    got = sum(len(client.get_metric_history(run_id, k)) for k in keys)
    read.append(time.perf_counter() - t0)
    assert got == layers * stats * steps, got
print(json.dumps({"version": mlflow.__version__, "write_s": write, "cpu_s": cpu,
                  "read_s": read}))
"""


def run_peer(python: str, script: str, *extra: str, repeats: int) -> dict | None:
    """One peer's script in a fresh interpreter; its JSON answer, or None (stderr printed)."""
    with tempfile.TemporaryDirectory(prefix="bnlab-peer-") as out:
        argv = [out, PEER_LAYERS, PEER_STATS, PEER_STEPS, repeats, *extra]
        proc = subprocess.run(
            [python, "-c", script, *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=3600,
            env={
                **os.environ,
                "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
                "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3.x: its file store on request
                "OMP_NUM_THREADS": "1",
            },
        )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_records() -> tuple[list[str], list[dict]]:
    """The series as bnlab's probe records: per step one record of 20 layers x 10 values."""
    keys = list(LAYER_KEYS)[:PEER_STATS]
    recs = [
        {
            "step": 20 * (s + 1),
            "metrics": {},
            "layers": [
                [s * 1e-3 + i + k * 0.1 for k in range(PEER_STATS)] for i in range(PEER_LAYERS)
            ],
        }
        for s in range(PEER_STEPS)
    ]
    return keys, recs


def bnlab_sdk_path(url: str, repeats: int) -> dict:
    """The SDK's spool + send: records appended to a spool (transport.Spool, one line each, as
    run.step's probes do), then transport.sync to the server (what the sender thread and
    `bnlab sync` do), timed together; and the layers read back."""
    from bnlab.sdk.transport import Spool, sync

    keys, recs = peer_records()
    names = [f"layer{i}" for i in range(PEER_LAYERS)]
    write, cpu, read = [], [], []
    for _ in range(repeats):
        path = Path(tempfile.mkdtemp(prefix="bnlab-peer-spool-")) / "run.jsonl"
        t0, c0 = time.perf_counter(), time.process_time()
        spool = Spool(path)
        spool.append({"type": "run", "key": secrets.token_urlsafe(32), "name": "peers"})
        spool.append({"type": "watch", "layer_names": names, "layer_keys": keys})
        for rec in recs:
            spool.append(rec)
        spool.close()
        state = sync(path, url)
        write.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert state.complete and state.records == PEER_STEPS, state
        read.append(_read_layers(url, state.run_id, keys))
    return {"write_s": write, "cpu_s": cpu, "read_s": read}


def bnlab_online(url: str, repeats: int) -> dict:
    """The SDK's public API online: bnlab.init(url), run.log() of the step's 200 values (named
    as the TensorBoard tags) at each of the 100 steps, run.finish() (which returns once the
    sender thread delivered the spool). Wall time from init() to finish()'s return, and its
    three parts."""
    import bnlab

    write, cpu, parts = [], [], {"init": [], "log": [], "finish": []}
    for _ in range(repeats):
        folder = tempfile.mkdtemp(prefix="bnlab-peer-online-")
        t0, c0 = time.perf_counter(), time.process_time()
        run = bnlab.init(name="peers online", url=url, dir=folder, progress=False)
        t1 = time.perf_counter()
        for s in range(PEER_STEPS):
            run.log(
                {
                    f"layer{i}/stat{k}": s * 1e-3 + i + k * 0.1
                    for i in range(PEER_LAYERS)
                    for k in range(PEER_STATS)
                },
                step=20 * (s + 1),
            )
        t2 = time.perf_counter()
        run.finish()
        t3 = time.perf_counter()
        write.append(t3 - t0)
        cpu.append(time.process_time() - c0)
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[k].append(v)
    return {"write_s": write, "cpu_s": cpu, "parts_s": parts}


def bnlab_sync_cli(url: str, repeats: int) -> dict:
    """`bnlab sync FILE` as a user types it: a new process (interpreter start and imports
    included) sending a spool written beforehand (untimed)."""
    keys, recs = peer_records()
    names = [f"layer{i}" for i in range(PEER_LAYERS)]
    write = []
    for _ in range(repeats):
        path = Path(tempfile.mkdtemp(prefix="bnlab-peer-cli-")) / "run.jsonl"
        lines = [
            {"type": "run", "key": secrets.token_urlsafe(32), "name": "peers cli"},
            {"type": "watch", "layer_names": names, "layer_keys": keys},
            *recs,
        ]
        path.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "from bnlab.cli import app; app()", "sync", str(path)],
            check=True,
            capture_output=True,
            timeout=600,
            env={**os.environ, "BNLAB_URL": url},
        )
        write.append(time.perf_counter() - t0)
    return {"write_s": write}


def bnlab_rest(url: str, repeats: int) -> dict:
    """Raw REST: the records pre-encoded in the SDK's columns body, POSTed in one request (a
    client that holds its points and sends them at once); the run created beforehand."""
    import httpx

    from bnlab.core import wire

    keys, recs = peer_records()
    body = wire.encode(recs, keys, [f"layer{i}" for i in range(PEER_LAYERS)])
    write, read = [], []
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(repeats):
            key = secrets.token_urlsafe(32)
            run_id = c.post("/api/script-runs", json={"key": key, "name": "peers rest"}).json()[
                "id"
            ]
            t0 = time.perf_counter()
            res = c.post(
                f"/api/runs/{run_id}/points",
                content=body,
                headers={"X-Bnlab-Run-Key": key, "Content-Type": wire.MEDIA_TYPE},
            )
            res.raise_for_status()
            write.append(time.perf_counter() - t0)
            read.append(_read_layers(url, run_id, keys))
    return {"write_s": write, "read_s": read}


def _read_layers(url: str, run_id: int, keys: list[str]) -> float:
    """Seconds to read the run's 200 series back (GET /layers, every point), checked."""
    import httpx

    t0 = time.perf_counter()
    res = httpx.get(
        f"{url}/api/runs/{run_id}/layers",
        params={"keys": ",".join(keys), "max_points": PEER_STEPS},
        timeout=120,
    )
    res.raise_for_status()
    spent = time.perf_counter() - t0
    layers = res.json()["layers"]
    got = sum(len(layer[k]) for layer in layers for k in keys)
    assert got == PEER_LAYERS * PEER_STATS * PEER_STEPS, got
    return spent


def mlflow_python(chosen: str | None) -> str | None:
    if chosen:
        return chosen
    probe = subprocess.run([sys.executable, "-c", "import mlflow"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def peers(args, figures: benchlib.Figures) -> None:  # noqa: ANN001
    from tests.bnlab.sdk.servers import make_server

    n = PEER_LAYERS * PEER_STATS * PEER_STEPS
    print(
        f"\npeers: {PEER_LAYERS} layers x {PEER_STATS} statistics x {PEER_STEPS} steps = {n:,} "
        f"values, median of {args.repeats}; load average {benchlib.load()[0]:.1f}"
    )
    results: dict[str, dict | None] = {}
    tb = subprocess.run([sys.executable, "-c", "import tensorboard"], capture_output=True)
    results["TensorBoard SummaryWriter (event file)"] = (
        run_peer(sys.executable, TENSORBOARD_SCRIPT, repeats=args.repeats)
        if tb.returncode == 0
        else None
    )
    py = mlflow_python(args.mlflow_python)
    for store in ("sqlite", "file"):
        label = f"MLflow log_batch ({store} store)"
        results[label] = (
            None if py is None else run_peer(py, MLFLOW_PEER_SCRIPT, store, repeats=args.repeats)
        )
    with benchlib.scratch_database("peers") as url:
        server = make_server(Path(tempfile.mkdtemp(prefix="bnlab-peers-")), database_url=url)
        print(f"waiting up to {benchlib.start_seconds():.0f} s for bnlab serve's /api/health")
        server.start(timeout_s=benchlib.start_seconds())
        try:
            bnlab_sdk_path(server.url, 1)  # warm-up: connections, the server's first requests
            results["bnlab SDK: spool + send (transport.sync) into PostgreSQL"] = bnlab_sdk_path(
                server.url, args.repeats
            )
            results["bnlab raw REST: one columns POST into PostgreSQL"] = bnlab_rest(
                server.url, args.repeats
            )
            results["bnlab SDK online: init + run.log per step + finish"] = bnlab_online(
                server.url, args.repeats
            )
            results["bnlab sync CLI (new process) of a spool"] = bnlab_sync_cli(
                server.url, args.repeats
            )
        finally:
            server.stop()
    med = statistics.median
    tb_s = results["TensorBoard SummaryWriter (event file)"]
    sdk_s = med(results["bnlab SDK: spool + send (transport.sync) into PostgreSQL"]["write_s"])
    print("| path | write s (wall) [min, max] | values/s | client CPU s | read back s |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        if r is None:
            print(f"| {label} | not installed or failed | | | |")
            figures.note(f"{label}: not measured (not installed here, or it failed)")
            continue
        w = med(r["write_s"])
        cpu = f"{med(r['cpu_s']):.3f}" if "cpu_s" in r else "–"
        rd = f"{med(r['read_s']):.3f}" if "read_s" in r else "–"
        version = f" {r['version']}" if "version" in r else ""
        print(
            f"| {label}{version} | {w:.3f} [{min(r['write_s']):.3f}, {max(r['write_s']):.3f}] "
            f"| {n / w:,.0f} | {cpu} | {rd} |"
        )
        parts = ""
        if "parts_s" in r:  # where the SDK's online path spends its wall time
            parts = "; " + ", ".join(f"{k} {med(v):.2f} s" for k, v in r["parts_s"].items())
            print("  of it: " + parts[2:])
        figures.add(
            f"{n:,} values (20 layers x 10 statistics x 100 steps): {label}{version}, write",
            round(w, 3),
            "s",
            spread=f"[{min(r['write_s']):.3f}, {max(r['write_s']):.3f}]",
            baseline=f"{n / w:,.0f} values/s; client CPU {cpu} s; read back {rd} s{parts}",
        )
    if tb_s is not None:
        tb_w = med(tb_s["write_s"])
        for label in (
            "bnlab SDK: spool + send",
            "bnlab raw REST",
            "bnlab SDK online",
            "bnlab sync CLI",
        ):
            key = next(k for k in results if k.startswith(label))
            ratio = tb_w / med(results[key]["write_s"])
            print(f"TensorBoard / {label}: {ratio:.2f}x (bnlab faster when > 1)")
            sdk = label.startswith("bnlab SDK")
            figures.add(
                f"TensorBoard SummaryWriter time / {label} time (same series)",
                round(ratio, 2),
                "x",
                target="≥ 3 (issue 26)" if sdk else "",
                met=ratio >= 3 if sdk else None,
            )
    for store in ("sqlite", "file"):
        r = results[f"MLflow log_batch ({store} store)"]
        if r is not None:
            ratio = med(r["write_s"]) / sdk_s
            print(f"MLflow ({store}) / bnlab SDK spool + send: {ratio:.1f}x")
            figures.add(
                f"MLflow log_batch ({store}) time / bnlab SDK spool + send time",
                round(ratio, 1),
                "x",
            )
            rd = med(r["read_s"]) / med(
                results["bnlab raw REST: one columns POST into PostgreSQL"]["read_s"]
            )
            figures.add(
                f"MLflow get_metric_history ({store}, 200 series) / bnlab GET /layers, read back",
                round(rd, 1),
                "x",
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000, help="probe steps per run")
    ap.add_argument("--layers", type=int, default=8, help="BN layers per probe step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mlflow-python", default=None, help="python of a venv with mlflow")
    ap.add_argument("--mlflow-steps", type=int, default=250, help="MLflow is slow: fewer steps")
    ap.add_argument("--peers", action="store_true", help="also TensorBoard/MLflow vs bnlab")
    ap.add_argument("--peers-only", action="store_true", help="only the peers' comparison")
    benchlib.add_figures_argument(ap)
    args = ap.parse_args()
    figures = benchlib.Figures("ingest", args.figures)
    if not args.peers_only:
        insert_points_part(args, figures)
    if args.peers or args.peers_only:
        peers(args, figures)


def insert_points_part(args, figures: benchlib.Figures) -> None:  # noqa: ANN001
    with benchlib.scratch_database("ingest") as url:
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
                figures.add(
                    f"insert_points into PostgreSQL, {batch * args.layers} rows per flush, "
                    + ("re-sent (upsert)" if resend else "new (binary COPY)"),
                    round(statistics.median(rates)),
                    "rows/s",
                    spread=f"best {max(rates):,.0f}",
                )
    py = mlflow_python(args.mlflow_python)
    if not py:
        print("MLflow: not measured (pass --mlflow-python PATH to a venv with mlflow)")
        return
    ml = bench_mlflow(py, args.mlflow_steps, args.layers, args.repeats)
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
    figures.add(
        f"MLflow {ml['version']} log_batch → SQLite, rows of 8 values", round(ml_rate), "rows/s"
    )
    figures.add(
        "insert_points (best flush size) / MLflow log_batch, rows/s",
        round(best / ml_rate, 1),
        "x",
        target="≥ 10",
        met=best / ml_rate >= 10,
    )


if __name__ == "__main__":
    main()
