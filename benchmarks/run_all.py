"""Run every benchmark and write the table the docs show (docs/performance-table.md).

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--skip NAME ...] [--list]

Each benchmark runs as its own process, one after another (their timings must not overlap),
with one torch thread, its own scratch PostgreSQL database and the benchmarks' Redis database
(benchmarks/benchlib.py: never the tests'), so the set runs beside the test suite. Each writes
its figures with the machine's load average at the moment it measured them; this script
collects them into docs/performance-table.md and its source, docs/performance-table.json.
With --only, the other benchmarks' sections are kept from the previous run (each section
says when, at which commit and in which mode it was measured). A benchmark that fails is
shown as failed with its log's last lines, and the others still run; the exit code is 1.

--quick: smaller sizes and fewer repeats (a check that everything runs, ~15 min on an idle
2-core machine); the table says which mode measured each section. Logs and raw figures go
to --logs (default: bnlab-bench-<time> in the temporary directory; not build/, which wheel
builds clear).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchlib  # noqa: E402

DOC = ROOT / "docs" / "performance-table.md"
SOURCE = ROOT / "docs" / "performance-table.json"


@dataclass(frozen=True)
class Bench:
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    about: str
    timeout_s: int = 3600
    json_flag: str = "--figures"  # bench_install writes its own JSON (--json)


BENCHES: dict[str, Bench] = {
    "engine": Bench(
        "bench_engine.py",
        ("--repeats", "5"),
        ("--repeats", "3", "--only", "digits"),
        "bnlab's own training loop with probes against a plain PyTorch loop (issue 26 item 2)",
    ),
    "probe-cost": Bench(
        "bench_engine.py",
        ("--breakdown", "--only", "digits", "--repeats", "3"),
        ("--breakdown", "--only", "digits", "--repeats", "1"),
        "where a probe's time goes in the training loop: its forwards and its fixed cost",
    ),
    "resnet": Bench(
        "bench_resnet.py",
        ("--repeats", "5", "--every", "20", "50"),
        ("--repeats", "2", "--epochs", "4", "--batch-size", "32"),
        "PreResNet-20 on CIFAR-sized images, probed against plain",
    ),
    "sdk": Bench(
        "bench_sdk.py",
        ("--repeats", "11"),
        ("--quick",),
        "the SDK in a user's own loop, and REST ingest from one client (issue 26 items 1, 4)",
    ),
    "integrations": Bench(
        "bench_integrations.py",
        ("--repeats", "5"),
        ("--quick",),
        "each framework integration's cost to a training loop (issue 23)",
    ),
    "ingest": Bench(
        "bench_ingest.py",
        ("--peers", "--repeats", "3"),
        ("--peers", "--repeats", "1", "--steps", "1000", "--mlflow-steps", "50"),
        "insert_points, and the same series through TensorBoard, MLflow and bnlab (item 4)",
    ),
    "ingest-memory": Bench(
        "bench_ingest_memory.py",
        (),
        ("--clients", "2", "--mb", "5"),
        "concurrent large JSON batches against bnlab serve: its peak memory (issue 21)",
    ),
    "api": Bench(
        "bench_api.py",
        (),
        ("--runs", "10", "--steps", "500", "--repeat", "10"),
        "API reads on PostgreSQL through uvicorn",
    ),
    "scale": Bench(
        "bench_scale.py",
        (),
        ("--runs", "2000", "--compare-runs", "20", "--passes", "10", "--repeats", "1"),
        "10,000 runs and a 100-run compare view, API and headless Chromium (issue 26 item 3)",
    ),
    "dashboard": Bench(
        "bench_dashboard.py",
        (),
        ("--repeats", "2"),
        "the compare view of 20 runs in headless Chromium",
    ),
    "load": Bench(
        "bench_load.py",
        ("--clients", "50", "--seconds", "30"),
        ("--clients", "10", "--seconds", "10"),
        "50 readers against bnlab serve on SQLite while two runs train",
    ),
    "refusals": Bench(
        "bench_refusals.py",
        ("--repeats", "5"),
        ("--repeats", "2"),
        "how fast the API refuses what it must refuse",
    ),
    "install": Bench(
        "bench_install.py",
        ("--repeats", "21"),
        ("--repeats", "5", "--skip-worker"),
        "install sizes and import time (fresh virtualenvs; packages from PyPI)",
        json_flag="--json",
    ),
}


def git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def install_figures(raw: dict) -> list[dict]:
    """bench_install.py's own JSON, as figures (its load averages: the spread over its run)."""
    loads = raw.get("load_average") or [0.0]
    load = [round(max(loads), 2), round(min(loads), 2), round(sum(loads) / len(loads), 2)]
    out = []
    for k, v in (raw.get("sizes_mb") or {}).items():
        client = k.startswith("client")
        out.append(
            {
                "what": f"install size: {k}",
                "value": v,
                "unit": "MB",
                "target": "≤ 40 MB" if client else "",
                "met": v <= 40 if client else None,
                "load": load,
            }
        )
    if "import_ratio" in raw:
        s = raw.get("import_s", {})
        out.append(
            {
                "what": "`import bnlab; bnlab.init` / `import httpx`, fresh interpreters",
                "value": raw["import_ratio"],
                "unit": "x",
                "baseline": f"bnlab {s.get('bnlab')} s, httpx {s.get('httpx')} s",
                "target": "≤ 1.5",
                "met": raw["import_ratio"] <= 1.5,
                "load": load,
            }
        )
    return out


def run_one(name: str, bench: Bench, quick: bool, logs: Path) -> dict:
    args = bench.quick if quick else bench.full
    logs.mkdir(parents=True, exist_ok=True)  # again: something may have removed it meanwhile
    figures_path = logs / f"{name}.json"
    log_path = logs / f"{name}.log"
    cmd = [sys.executable, str(ROOT / "benchmarks" / bench.script), *args]
    shown = " ".join(["python", f"benchmarks/{bench.script}", *args])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    print(f"\n== {name}: {shown}  (load average {benchlib.load()[0]:.1f})", flush=True)
    load0, t0 = benchlib.load(), time.monotonic()
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                [*cmd, bench.json_flag, str(figures_path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=bench.timeout_s,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    spent = time.monotonic() - t0
    section = {
        "name": name,
        "about": bench.about,
        "command": shown,
        "mode": "quick" if quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "seconds": round(spent),
        "load_start": [round(x, 2) for x in load0],
        "load_end": [round(x, 2) for x in benchlib.load()],
        "exit": code,
        "figures": [],
        "notes": [],
    }
    if figures_path.exists():
        raw = json.loads(figures_path.read_text())
        if bench.json_flag == "--figures":
            section["figures"], section["notes"] = raw["figures"], raw.get("notes", [])
        else:
            section["figures"] = install_figures(raw)
    if code != 0:
        try:
            section["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:]
        except OSError as exc:  # the folder went away under us
            section["log_tail"] = [f"(log unreadable: {exc})"]
    status = "ok" if code == 0 else f"FAILED ({code})"
    print(f"   {status} in {spent:.0f} s, {len(section['figures'])} figures; log {log_path}")
    for f in section["figures"]:
        print(f"   {f['what']}: {f['value']} {f.get('unit', '')}")
    return section


def cell(v: object) -> str:
    text = "" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def value_text(f: dict) -> str:
    v = f["value"]
    unit = f.get("unit") or ""
    if isinstance(v, float) and unit == "x" and abs(v) < 10:
        v = f"{v:.3f}"  # a ratio: the 3 decimals its target is judged at
    elif isinstance(v, float) and abs(v) >= 1000:
        v = f"{v:,.0f}"
    elif isinstance(v, int) and abs(v) >= 10000:
        v = f"{v:,}"
    return f"{v} {unit}".strip()


def mark(f: dict) -> str:
    met = f.get("met")
    return "" if met is None else ("✔" if met else "✘")


def load_text(load: list[float]) -> str:
    return " / ".join(f"{x:.1f}" for x in load)


def render(sections: dict[str, dict], meta: dict) -> str:
    cores = meta["machine"]["cores"]
    lines = [
        "# Performance table",
        "",
        "<!-- Generated by benchmarks/run_all.py from docs/performance-table.json: do not edit;"
        " rerun the command. -->",
        "",
        f"Generated by `{meta['command']}` on {meta['machine']['cores']} cores "
        f"({meta['machine']['cpu']}), Python {meta['machine']['python']}, torch "
        f"{meta.get('torch', '?')} with one thread; each section below says when, at which commit "
        "and in which mode (full or `--quick`) it was measured. How the benchmarks work and "
        "what each figure means: [performance.md](performance.md).",
        "",
        "Every figure carries the machine's load average (1, 5 and 15 minutes) read when it "
        f"was measured. This machine has {cores} cores: a load above {cores} means other work "
        "shared them, so wall-clock figures include waits for a core (the CPU-time ratios of "
        "the training benchmarks much less so). Targets are issue 26's and the earlier "
        "issues'; ✔ met in this run, ✘ missed, blank: no target.",
        "",
    ]
    loaded = [
        s["name"]
        for s in sections.values()
        if max([*s["load_start"][:1], *s["load_end"][:1]] + [f["load"][0] for f in s["figures"]])
        > cores
    ]
    if loaded:
        lines += [
            f"**Measured on a loaded machine**: the load average exceeded the {cores} cores "
            f"during {', '.join(loaded)}. These figures are not the idle-machine figures the "
            "issue asks for; rerun the command on an idle machine for those.",
            "",
        ]
    targeted = [(s, f) for s in sections.values() for f in s["figures"] if f.get("target")]
    if targeted:
        lines += [
            "## Targets at a glance",
            "",
            "| benchmark | figure | value | target | met | load 1 / 5 / 15 min |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['name']} | {cell(f['what'])} | {cell(value_text(f))} | {cell(f['target'])} "
            f"| {mark(f)} | {load_text(f['load'])} |"
            for s, f in targeted
        ]
        lines.append("")
    for s in sections.values():
        dirty = " with uncommitted changes" if s.get("dirty") else ""
        lines += [
            f"## {s['name']}: {s['about']}",
            "",
            f"`{s['command']}` — {s['mode']} mode, {s['date']}, commit {s['commit']}{dirty}, "
            f"{s['seconds']} s; load average {load_text(s['load_start'])} at the start, "
            f"{load_text(s['load_end'])} at the end.",
            "",
        ]
        if s["exit"] != 0:
            lines += [f"**Failed** (exit {s['exit']}); the log's last lines:", "", "```"]
            lines += [*s.get("log_tail", []), "```", ""]
        if s["figures"]:
            lines += [
                "| figure | value | spread | beside it | target | met | load 1 / 5 / 15 min |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {cell(f['what'])} | {cell(value_text(f))} | {cell(f.get('spread'))} | "
                f"{cell(f.get('baseline'))} | {cell(f.get('target'))} | {mark(f)} | "
                f"{load_text(f['load'])} |"
                for f in s["figures"]
            ]
            lines.append("")
        for note in s.get("notes", []):
            lines += [f"- {note}"]
        if s.get("notes"):
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--only", nargs="+", choices=list(BENCHES), metavar="NAME")
    ap.add_argument("--skip", nargs="+", choices=list(BENCHES), metavar="NAME", default=[])
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--out", type=Path, default=DOC, help="the markdown table (its .json beside)")
    ap.add_argument("--logs", type=Path, default=None, help="where logs and raw figures go")
    args = ap.parse_args()
    if args.list:
        for name, b in BENCHES.items():
            print(f"{name:10} benchmarks/{b.script}: {b.about}")
        return 0
    names = [n for n in (args.only or BENCHES) if n not in args.skip]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.logs or Path(tempfile.gettempdir()) / f"bnlab-bench-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    source = args.out.with_suffix(".json")
    previous = json.loads(source.read_text()) if source.exists() and args.only else {}
    sections: dict[str, dict] = dict(previous.get("sections", {}))
    t0 = time.monotonic()
    print(
        f"{len(names)} benchmarks ({'quick' if args.quick else 'full'}), logs in {logs}; "
        f"load average {load_text(list(benchlib.load()))} on {os.cpu_count()} cores"
    )
    for name in names:
        sections[name] = run_one(name, BENCHES[name], args.quick, logs)
        ordered = {n: sections[n] for n in BENCHES if n in sections}
        meta = {
            "command": "python benchmarks/run_all.py" + (" --quick" if args.quick else ""),
            "machine": benchlib.machine(),
            "torch": _torch_version(),
        }
        # written after each benchmark: an interrupted run keeps what it measured
        source.write_text(json.dumps({"meta": meta, "sections": ordered}, indent=1))
        args.out.write_text(render(ordered, meta))
    failed = [n for n in names if sections[n]["exit"] != 0]
    print(
        f"\nwrote {args.out} and {source} in {time.monotonic() - t0:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - only a label in the table
        return "?"


if __name__ == "__main__":
    sys.exit(main())
