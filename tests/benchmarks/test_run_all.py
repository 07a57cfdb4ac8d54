"""benchmarks/run_all.py: one command runs the benchmarks and writes the table the docs show,
with the load average beside every figure (issue 26 item 5). Runs the real script on the
quickest real benchmark (bench_refusals: an in-process app on SQLite)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOAD = r"\d+\.\d / \d+\.\d / \d+\.\d"  # 1, 5 and 15-minute load averages


def test_list_names_every_benchmark():
    out = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    names = [line.split()[0] for line in out.splitlines()]
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    listed = {re.search(r"benchmarks/(bench_\w+\.py)", line).group(1) for line in out.splitlines()}
    assert "engine" in names and "ingest" in names
    assert scripts <= listed  # every benchmark of this tree is in the set


def test_run_writes_the_table_with_the_load_of_each_figure(tmp_path):
    """--only refreshes that benchmark's section and keeps the others (from the .json beside
    the table); every figure row carries the load averages; the command is in the table."""
    out = tmp_path / ("table" + ".md")  # a name tests/test_docs.py does not read as a doc
    kept = {
        "name": "engine",
        "about": "kept from an earlier run",
        "command": "python benchmarks/bench_engine.py --repeats 5",
        "mode": "full",
        "date": "2026-01-01 00:00 UTC",
        "commit": "abc1234",
        "dirty": False,
        "seconds": 100,
        "load_start": [0.5, 0.4, 0.3],
        "load_end": [0.6, 0.5, 0.4],
        "exit": 0,
        "figures": [
            {
                "what": "digits, mlp: probed / plain",
                "value": 1.021,
                "unit": "x",
                "spread": "[1.01, 1.03]",
                "target": "≤ 1.03",
                "met": True,
                "baseline": "",
                "load": [0.6, 0.5, 0.4],
            }
        ],
        "notes": [],
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": {}, "sections": {"engine": kept}}))
    proc = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--only", "refusals", "--out", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert "`python benchmarks/bench_refusals.py --repeats 2` — quick mode" in table
    assert "## engine: kept from an earlier run" in table and "| 1.021 x |" in table
    rows = [line for line in table.splitlines() if "refused" in line and line.startswith("|")]
    assert len(rows) >= 2
    assert all(re.search(rf"\| {LOAD} \|$", row) for row in rows), rows
    source = json.loads(out.with_suffix(".json").read_text())
    assert list(source["sections"]) == ["engine", "refusals"]
    figures = source["sections"]["refusals"]["figures"]
    assert len(figures) == 4 and all(len(f["load"]) == 3 and f["value"] > 0 for f in figures)
