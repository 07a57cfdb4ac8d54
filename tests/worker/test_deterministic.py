"""`bnlab run --deterministic`: two runs in separate processes give bit-identical results
(metrics, per-layer statistics, summary), and the summary records the numerics they ran with."""

import json
import subprocess
import sys

import pytest

CONFIG = {
    "name": "determinism",
    "dataset": {"name": "digits"},
    "model": {"widths": [32, 32], "dropout": {"kind": "bernoulli", "rate": 0.3}},
    "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
    "probe": {"every_steps": 5, "train_mode_test_batch_sizes": [1, 8], "recalibrate_samples": 256},
}
TIMING = ("wall_s", "steps_per_s")  # wall-clock, not results


def _run(tmp_path, tag: str, *flags: str) -> dict:
    cfg, out = tmp_path / "cfg.json", tmp_path / f"{tag}.json"
    cfg.write_text(json.dumps(CONFIG))
    cmd = [sys.executable, "-m", "bnlab.cli", "run", str(cfg), "--out", str(out), *flags]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    for key in TIMING:
        result["summary"].pop(key)
    return result


@pytest.mark.slow
def test_repeat_bit_identical_deterministic_runs(tmp_path):
    first = _run(tmp_path, "a", "--deterministic")
    second = _run(tmp_path, "b", "--deterministic")
    env = first["summary"]["env"]
    assert env["deterministic"] is True and env["threads"] == 1
    assert env["torch"] and env["device"] == "cpu"
    assert first["metrics"] and first["layers"]
    # json round-trips floats exactly (repr), so equal JSON is equal bits
    assert first == second
