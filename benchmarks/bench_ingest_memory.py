"""Memory of concurrent ingest (issue 21 item 3): N clients POST one large JSON points batch
each, at once, to a fresh `bnlab serve` (embedded SQLite, no worker); the peak resident memory
of the server's processes, each answer's status and detail, and the wall time.

    python benchmarks/bench_ingest_memory.py [--clients 6] [--mb 42] [--repo PATH]

--repo: the source tree whose `bnlab serve` to measure (default this one; e.g. an export of an
older commit, to compare). The attack that found the hole: six 42 MB batches took the server
from 577 MB to 3.77 GB, and five got 503 "database unavailable" after 111 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib
import httpx
import psutil

from bnlab.core.registry import LAYER_KEYS

ROOT = Path(__file__).resolve().parents[1]


def body(mb: float, seed: int) -> bytes:
    """A points batch of about `mb` MB: records of 4,000 layers, 4-decimal values."""
    rng = random.Random(seed)
    layers = [[round(rng.random(), 4) for _ in LAYER_KEYS] for _ in range(4000)]
    one = len(json.dumps(layers))
    n = max(1, int(mb * 2**20 / one))
    records = [{"step": s, "metrics": {"train_loss": 1.0}, "layers": layers} for s in range(n)]
    return json.dumps({"records": records}, separators=(",", ":")).encode()


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--mb", type=float, default=42.0)
    ap.add_argument("--repo", type=Path, default=ROOT)
    benchlib.add_figures_argument(ap)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bnlab-bench-ingest-mem-"))
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNLAB_")}
    env.update(PYTHONPATH=str(args.repo), OMP_NUM_THREADS="1", BNLAB_DATA_DIR=str(data))
    cmd = [sys.executable, "-c", "from bnlab.cli import app; app()", "serve"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "0"]
    log = (data / "serve.log").open("wb")
    proc = subprocess.Popen(
        cmd, cwd=args.repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        print(f"waiting up to {benchlib.start_seconds():.0f} s for bnlab serve's /api/health")
        deadline = time.monotonic() + benchlib.start_seconds()
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"bnlab serve did not start; see {data / 'serve.log'}")
            time.sleep(0.3)
        runs = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(args.clients):
                k = secrets.token_urlsafe(32)
                r = c.post("/api/script-runs", json={"key": k, "name": f"mem {i}"})
                runs.append((r.json()["id"], k))
        payloads = [body(args.mb, i) for i in range(args.clients)]
        idle = tree_rss(proc.pid)
        peak, stop = [idle], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                time.sleep(0.1)

        answers: list[tuple[int, float, str]] = [(0, 0.0, "")] * args.clients
        start = time.monotonic()

        def send(i: int) -> None:
            run_id, k = runs[i]
            t = time.monotonic()
            with httpx.Client(base_url=url, timeout=600) as c:
                try:
                    r = c.post(
                        f"/api/runs/{run_id}/points",
                        content=payloads[i],
                        headers={"X-Bnlab-Run-Key": k, "Content-Type": "application/json"},
                    )
                    detail = "" if r.status_code == 200 else r.text[:160]
                    code = r.status_code
                except httpx.HTTPError as exc:
                    code, detail = -1, str(exc)[:160]
            answers[i] = (code, time.monotonic() - t, detail)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        stop.set()
        watcher.join()
        print(f"repo {args.repo}")
        print(
            f"{args.clients} clients x {len(payloads[0]) / 2**20:.1f} MB JSON, load "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(
            f"server RSS: idle {idle / 2**20:.0f} MB, peak {peak[0] / 2**20:.0f} MB; "
            f"wall {wall:.1f} s"
        )
        for i, (code, took, detail) in enumerate(answers):
            print(f"  client {i}: {code} in {took:.1f} s {detail}")
        out = benchlib.Figures("ingest-memory", args.figures)
        size = f"{args.clients} clients x {len(payloads[0]) / 2**20:.1f} MB JSON at once"
        out.add(
            f"{size}: the server's peak resident memory",
            round(peak[0] / 2**20),
            "MB",
            baseline=f"idle {idle / 2**20:.0f} MB; wall {wall:.1f} s",
        )
        codes = [code for code, _, _ in answers]
        out.add(
            f"{size}: answered 200",
            codes.count(200),
            f"of {args.clients}",
            spread="answers: " + ", ".join(map(str, codes)),
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    main()
