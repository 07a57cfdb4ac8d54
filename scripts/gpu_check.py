"""The GPU path on real hardware, in one command and one table (within about 10 minutes).

    python scripts/gpu_check.py                 # on a CUDA machine
    python scripts/gpu_check.py --cpu           # the same steps on the CPU, small: a dry run

Made for a bare CUDA machine with Python and torch preinstalled and no network: run from this
repository; the other dependencies come from wheels brought along in docker/wheels/gpu/
(`bash scripts/gpu_wheels.sh` fills it on a machine with a package index, for the target's
Python version), installed with --no-index when they are not importable already. Torch is
never installed or replaced.

Steps (each bounded in time, each a row of the table; a failure does not stop the others):
1. environment: torch, CUDA, the GPU, bf16 support;
2. the CUDA tests (tests/bnlab/engine: channels-last + on-device augmentation, data
   standardised on the device, training with data on the GPU, and the export check: a CNN and a
   WRN trained in fp32 with TF32 convolutions and a DenseNet trained in bf16, whose exported
   float64 numpy predictor must match the IEEE-fp32 reference logits within 1e-4);
3. the per-GPU worker: `bnlab serve --workers 0` and `bnlab worker --gpus 0` on one data dir
   (SQLite, the embedded broker), a submitted run trained by the worker on GPU 0, its device
   read back from the API;
4. the probe's overhead, probed / plain interleaved (benchmarks/bench_resnet.py), for
   PreResNet-20 and WRN-16-4 on synthetic CIFAR, one probe per 20 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "docker" / "wheels" / "gpu"
NEEDED = ["pydantic", "httpx", "typer", "rich", "numpy", "sqlalchemy", "celery", "fastapi",
          "uvicorn", "alembic", "pydantic_settings", "tenacity", "pytest", "tqdm",
          "sse_starlette", "multipart", "orjson", "boto3", "psycopg"]  # fmt: skip


def run(cmd: list, timeout: float, **kw) -> tuple[int, str]:
    try:
        out = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw
        )
        return out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as exc:
        text = b"".join(x for x in (exc.stdout, exc.stderr) if isinstance(x, bytes))
        return 124, f"timed out after {timeout:.0f} s\n{text.decode(errors='replace')}"


def ensure_dependencies() -> str:
    """Install what is missing from the wheels brought along (never from a network)."""
    import importlib.util

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return "all present"
    if not WHEELS.is_dir():
        return f"missing {missing} and no {WHEELS.relative_to(REPO)}: run scripts/gpu_wheels.sh"
    code, out = run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", WHEELS,
         "--no-deps", *sorted(WHEELS.glob("*.whl"))],
        600,
    )  # fmt: skip
    if code:
        return f"pip failed: {out[-400:]}"
    code, out = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                     "-e", REPO], 300)  # fmt: skip
    return (
        "installed from docker/wheels/gpu" if code == 0 else f"bnlab install failed: {out[-400:]}"
    )


def environment(cpu: bool) -> dict:
    import torch

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
    }
    if not cpu and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


def cuda_tests(cpu: bool, budget: float) -> tuple[str, str]:
    tests = ["tests/bnlab/engine/test_cifar_training.py", "tests/bnlab/engine/test_engine_train.py"]
    select = "cuda or on_the_device" if not cpu else "make_cifar_command"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    code, out = run([*pytest, *tests, "-k", select], budget, cwd=REPO)
    summary = next(
        (ln for ln in reversed(out.splitlines()) if " in " in ln and "=" in ln), out[-200:]
    )
    return ("ok" if code == 0 else f"exit {code}"), summary.strip("= ")


def worker_on_gpu(cpu: bool, budget: float) -> tuple[str, str]:
    """serve (no worker) + `bnlab worker --gpus 0` on one data dir; a run trained there."""
    data = Path(tempfile.mkdtemp(prefix="bnlab-gpu-check-"))
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "BNLAB_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    bnlab = [sys.executable, "-c", "from bnlab.cli import app; app()"]
    procs = []
    deadline = time.monotonic() + budget
    try:
        procs.append(subprocess.Popen(
            [*bnlab, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
            env=env, stdout=open(data / "serve.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO,
        ))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        gpus = "none" if cpu else "0"
        procs.append(subprocess.Popen(
            [*bnlab, "worker", "--gpus", gpus], env=env,
            stdout=open(data / "worker.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO,
        ))  # fmt: skip
        cfg = {
            "name": "gpu-check",
            "dataset": {"name": "synthetic", "n_samples": 2000},
            "model": {"arch": "mlp", "widths": [64, 64], "dropout": {"rate": 0.1}},
            "train": {"epochs": 2, "device": "cpu" if cpu else "cuda"},
        }
        req = urllib.request.Request(
            f"{url}/api/runs", json.dumps(cfg).encode(), {"Content-Type": "application/json"}
        )
        run_id = json.load(urllib.request.urlopen(req, timeout=10))["id"]
        while time.monotonic() < deadline:
            got = json.load(urllib.request.urlopen(f"{url}/api/runs/{run_id}", timeout=10))
            if got["status"] not in ("queued", "running"):
                ok = got["status"] == "succeeded"
                return ("ok" if ok else got["status"]), f"run {run_id} on {got.get('device')}"
            time.sleep(1)
        return "timed out", (data / "worker.log").read_text(errors="replace")[-300:]
    except Exception as exc:  # noqa: BLE001 - the row says what failed
        return "error", f"{type(exc).__name__}: {exc}"
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(data, ignore_errors=True)


def overhead(cpu: bool, arch: str, depth: int, widen: int, budget: float) -> tuple[str, str]:
    args = ["--arch", arch, "--depth", depth, "--widen", widen, "--every", "20"]
    args += ["--device", "cpu", "--repeats", "1", "--epochs", "1", "--batches", "10",
                "--batch-size", "32"] if cpu else [
        "--device", "cuda", "--repeats", "5", "--epochs", "10", "--batches", "10"]  # fmt: skip
    code, out = run([sys.executable, "benchmarks/bench_resnet.py", *args], budget, cwd=REPO)
    # bench_resnet's row for one probe per 20 steps: every, plain img/s, probed img/s, ratio ...
    rows = [ln.split() for ln in out.splitlines() if re.match(r"^\s*20\s+\d", ln)]
    if code or not rows:
        return f"exit {code}", out[-300:]
    every, plain, probed, ratio, lo, hi = rows[-1][:6]
    return "ok", f"{plain} vs {probed} img/s plain vs probed: {ratio} {lo} {hi}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU at small sizes")
    ap.add_argument("--budget-s", type=float, default=570, help="the whole check's time")
    args = ap.parse_args()
    t0 = time.monotonic()
    rows = [("dependencies", ensure_dependencies(), "")]
    env = environment(args.cpu)
    rows.append(("environment", "ok", json.dumps(env)))

    def left(share: float, least: float = 60.0) -> float:  # a step's share of the time left
        return max(least, share * (args.budget_s - (time.monotonic() - t0)))

    rows.append(("CUDA tests (TF32 + bf16 export within 1e-4)", *cuda_tests(args.cpu, left(0.35))))
    rows.append(
        ("per-GPU worker (bnlab worker --gpus 0)", *worker_on_gpu(args.cpu, left(0.3, 120)))
    )
    rows.append(
        ("overhead PreResNet-20, probe/20 steps", *overhead(args.cpu, "resnet", 20, 1, left(0.5)))
    )
    rows.append(
        ("overhead WRN-16-4, probe/20 steps", *overhead(args.cpu, "wrn", 16, 4, left(0.95)))
    )
    card = env.get("gpu", "CPU (dry run)")
    print(f"\nbnlab GPU check on {card}; {time.monotonic() - t0:.0f} s\n")
    print("| step | result | detail |\n|---|---|---|")
    for step, result, detail in rows:
        detail = " ".join(str(detail).replace("|", "/").split())  # one table row each
        print(f"| {step} | {result} | {detail[-400:]} |")
    sys.exit(
        0
        if all(r[1] in ("ok", "all present", "installed from docker/wheels/gpu") for r in rows)
        else 1
    )


if __name__ == "__main__":
    main()
