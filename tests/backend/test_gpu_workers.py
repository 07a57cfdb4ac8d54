"""`bnlab worker --gpus`: one supervised worker process per GPU, each seeing only its own.

No GPU on this machine: the CPU torch wheel cannot start CUDA, which is exactly the case of a
CUDA wheel on a host whose driver is too old. So the real processes show both promises at once:
each child is pinned to its own GPU (CUDA_VISIBLE_DEVICES), and each one says CUDA cannot start
(in its log, its workers row shown by /api/health, its health file) and takes no run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from backend.db.models import Worker
from backend.gpu_workers import GpuSpecError, discover_gpus, parse_gpus, query_gpus, slots
from tests.worker.procs import ROOT, Stack, make_stack, tiny_config, wait_for


@pytest.mark.parametrize(
    ("spec", "gpus"),
    [
        ("0,1,3", ["0", "1", "3"]),
        (" 2 ", ["2"]),
        ("none", []),
        ("all", ["0", "1"]),
        ("07", ["7"]),
    ],
)
def test_parse_gpu_list(spec, gpus) -> None:
    assert parse_gpus(spec, available=["0", "1"]) == gpus


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0,x", "indices"),
        ("0,0", "twice"),
        ("", "indices"),
        ("-1", "indices"),
    ],
)
def test_refuse_bad_gpu_list(spec, message) -> None:
    with pytest.raises(GpuSpecError, match=message):
        parse_gpus(spec, available=["0"])


def test_all_without_gpus_says_what_to_do() -> None:
    with pytest.raises(GpuSpecError, match="--gpus none"):
        parse_gpus("all", available=[])


def _fake_smi(bin_dir, body: str) -> None:
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + body + "\n")
    smi.chmod(0o755)


def test_gpu_queries_read_nvidia_smi(tmp_path, monkeypatch) -> None:
    """discover_gpus and the worker's driver version ask nvidia-smi (a real executable on PATH
    here, answering per --query-gpu field); a failing one counts as absent."""
    from worker.device import _driver_version

    _fake_smi(
        tmp_path,
        'case "$1" in --query-gpu=index) printf "0\\n1\\n3\\n";; '
        '--query-gpu=driver_version) printf "580.65.06\\n580.65.06\\n580.65.06\\n";; '
        "*) exit 9;; esac",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert query_gpus("index") == discover_gpus() == ["0", "1", "3"]
    assert _driver_version() == "580.65.06"
    assert query_gpus("name") is None  # exit status 9
    _fake_smi(tmp_path, "exit 1")
    assert query_gpus("index") is None


def test_each_slot_pins_one_device() -> None:
    plan = slots(["0", "1", "3"])
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in plan] == ["0", "1", "3"]
    assert all(env["BNLAB_REQUIRE_CUDA"] == "true" for _, env in plan)
    assert all(env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for _, env in plan)
    cpu = slots([], cpu_workers=2)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in cpu] == ["", ""]


def test_cli_names_the_bad_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "worker", "--gpus", "1,a"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )
    assert done.returncode == 2 and "--gpus" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    yield from make_stack("pg_redis", tmp_path)


def rows(stack: Stack) -> list[Worker]:
    with stack.sessions() as s:
        return list(s.scalars(select(Worker)))


@pytest.mark.slow
def test_one_pinned_process_per_gpu_restarted_on_its_gpu(stack: Stack, tmp_path) -> None:
    """`bnlab worker --gpus 0,1,3`: three processes, CUDA_VISIBLE_DEVICES 0, 1 and 3 each;
    CUDA cannot start (CPU wheel), so each reports the error and takes no run; a child killed
    with SIGKILL comes back on the same GPU; SIGTERM stops them all."""
    env = {**stack.env, "TMPDIR": str(tmp_path)}  # its own health files
    log = (tmp_path / "workers.log").open("wb")
    sup = subprocess.Popen(
        [sys.executable, "-m", "bnlab.cli", "worker", "--gpus", "0,1,3"],
        env=env,
        cwd=str(ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        found = wait_for(lambda: len(r := rows(stack)) == 3 and r, 120, "three worker rows")
        by_gpu = {w.device["visible_devices"]: w for w in found}
        assert sorted(by_gpu) == ["0", "1", "3"]
        for w in found:
            assert w.device["cuda_available"] is False and w.device["require_cuda"] is True
            assert "CUDA cannot start" in w.device["error"], w.device
        # A queued run stays queued: no pinned worker without CUDA trains it on the CPU.
        run_id = stack.create_run(tiny_config(name="must-wait"))
        health = subprocess.run(
            [sys.executable, "-m", "worker.healthcheck"],
            env=env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert health.returncode == 1 and "CUDA cannot start" in health.stdout, health.stdout

        victim = by_gpu["1"]
        os.kill(victim.pid, signal.SIGKILL)
        back = wait_for(
            lambda: [
                w for w in rows(stack) if w.device["visible_devices"] == "1" and w.pid != victim.pid
            ],
            60,
            "GPU 1's worker to come back",
        )
        assert back[0].device["visible_devices"] == "1"
        assert stack.run(run_id).status == "queued"
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(60)
        log.close()
    text = (tmp_path / "workers.log").read_text(errors="replace")
    assert "takes no runs" in text and "CUDA_VISIBLE_DEVICES='3'" in text
    # Stopped workers deregister; only the SIGKILLed one's row is left (it goes stale).
    wait_for(
        lambda: [w.pid for w in rows(stack)] == [victim.pid],
        30,
        "the stopped workers to deregister",
    )
