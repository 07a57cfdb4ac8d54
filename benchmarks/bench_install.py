"""What each install costs, and what `import bnlab` costs against `import httpx`.

    python benchmarks/bench_install.py [--repeats 21] [--json out.json] [--skip-worker]

Builds this checkout's wheel, then in fresh venvs on this interpreter:
- client: a venv that already has torch (the CPU wheel; pip takes it from this machine's disk),
  then `pip install bnlab` (no extra): the bytes the client adds to site-packages;
- server: `bnlab[server]` into an empty venv, at the lock file's versions (what the API image
  installs, without torch);
- worker: torch, then `bnlab[worker]` at the lock file's versions.
Then, in the client venv, fresh interpreters alternate `import httpx` and `import bnlab;
bnlab.init` (the attribute loads the SDK: spool, sender, httpx; NumPy is not loaded) and the
median of each is compared. Sizes are the bytes of the files under site-packages (du's apparent
size), the interpreters' own `-X importtime` total excluded: each timing is the wall time of
the whole `python -c` process minus that of `python -c pass`, measured interleaved.
Targets (issue #22): the client adds at most 40 MB beside torch; import at most 1.5x httpx.
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

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
TORCH = "torch==2.13.0"  # the machine's CPU wheel (a range in pyproject; this is the baseline)


def sh(*cmd: object, **kw) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    out = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=1800, **kw
    )
    if out.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def site_bytes(venv: Path) -> int:
    (site,) = venv.glob("lib/python3*/site-packages")
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())


def make_venv(where: Path) -> Path:
    sh(sys.executable, "-m", "venv", where)
    return where / "bin" / "python"


def load_s() -> float:
    return os.getloadavg()[0]


def import_time(py: Path, code: str) -> float:
    t0 = time.perf_counter()
    sh(py, "-c", code)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-worker", action="store_true")
    ap.add_argument(
        "--write-docs", action="store_true", help="put the table into docs/packaging.md"
    )
    args = ap.parse_args()
    loads = [load_s()]
    with tempfile.TemporaryDirectory(prefix="bnlab-install-") as tmp:
        tmp = Path(tmp)
        sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, REPO)
        (wheel,) = tmp.glob("bnlab-*.whl")
        sizes: dict[str, int] = {}

        client = make_venv(tmp / "client")
        sh(client, "-m", "pip", "install", "-q", TORCH)
        sizes["torch alone (the baseline)"] = site_bytes(tmp / "client")
        sh(client, "-m", "pip", "install", "-q", wheel)
        sizes["client added beside torch"] = (
            site_bytes(tmp / "client") - sizes["torch alone (the baseline)"]
        )
        loads.append(load_s())

        server = make_venv(tmp / "server")
        empty = site_bytes(tmp / "server")
        sh(server, "-m", "pip", "install", "-q", "-c", LOCK, f"bnlab[server] @ {wheel.as_uri()}")
        sizes["server install (no torch)"] = site_bytes(tmp / "server") - empty
        loads.append(load_s())

        if not args.skip_worker:
            worker = make_venv(tmp / "worker")
            sh(worker, "-m", "pip", "install", "-q", TORCH)
            with_torch = site_bytes(tmp / "worker")
            constraints = tmp / "constraints.txt"
            constraints.write_text(
                "".join(
                    line + "\n" for line in LOCK.read_text().splitlines() if "torch==" not in line
                )
            )
            sh(
                worker,
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                constraints,
                f"bnlab[worker] @ {wheel.as_uri()}",
            )
            sizes["worker added beside torch"] = site_bytes(tmp / "worker") - with_torch
            loads.append(load_s())

        codes = {"pass": "pass", "httpx": "import httpx", "bnlab": "import bnlab; bnlab.init"}
        times: dict[str, list[float]] = {k: [] for k in codes}
        for i in range(args.repeats):
            order = list(codes) if i % 2 == 0 else list(reversed(codes))
            for name in order:
                times[name].append(import_time(client, codes[name]))
        loads.append(load_s())
        base = statistics.median(times["pass"])
        httpx_s = statistics.median(times["httpx"]) - base
        bnlab_s = statistics.median(times["bnlab"]) - base
        heavy = sh(
            client,
            "-c",
            "import sys, bnlab; bnlab.init; print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'numpy', 'torch', 'pydantic', 'sqlalchemy', 'celery', 'fastapi'}))",
        ).strip()

    result = {
        "python": sys.version.split()[0],
        "sizes_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "import_s": {"httpx": round(httpx_s, 4), "bnlab": round(bnlab_s, 4)},
        "import_ratio": round(bnlab_s / httpx_s, 2),
        "import_repeats": args.repeats,
        "loaded_by_import_bnlab": heavy,
        "load_average": [round(x, 2) for x in loads],
    }
    table = "\n".join(
        [
            f"Measured by `python benchmarks/bench_install.py --write-docs` on Python "
            f"{result['python']}, load average {min(loads):.1f}-{max(loads):.1f} (2 cores):",
            "",
            "| install | MB added | target |",
            "|---|---|---|",
            *(
                f"| {k} | {v} | {'at most 40' if k.startswith('client') else ''} |"
                for k, v in result["sizes_mb"].items()
            ),
            "",
            f"`import bnlab; bnlab.init`: {bnlab_s * 1e3:.0f} ms against `import httpx` "
            f"{httpx_s * 1e3:.0f} ms (medians of {args.repeats}): **{result['import_ratio']}x** "
            f"(target: at most 1.5x); other heavy modules it loads: {heavy}.",
        ]
    )
    print(table)
    if args.write_docs:
        doc = REPO / "docs" / "packaging.md"
        text = doc.read_text()
        begin, end = "<!-- bench_install: begin -->\n", "<!-- bench_install: end -->"
        head, rest = text.split(begin)
        doc.write_text(head + begin + table + "\n" + end + rest.split(end, 1)[1])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
