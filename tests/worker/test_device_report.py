"""worker/device.py's report on this machine's CPU-only torch wheel: a worker free to use the CPU
is a CPU worker with no error (why CUDA is not in use is a note); only a worker that must use a
GPU (BNLAB_REQUIRE_CUDA) reports an error and refuses runs."""

from __future__ import annotations

import pytest
import torch

from worker.device import describe, probe, usable

pytestmark = pytest.mark.skipif(
    torch.version.cuda is not None, reason="needs a CPU-only torch build"
)


def test_cpu_worker_reports_cpu_without_error() -> None:
    info = probe(require_cuda=False)
    assert info["error"] is None, info
    assert info["kind"] == "cpu" and info["name"] == "cpu" == describe(info)
    assert "CPU-only build" in info["cuda_note"], info
    assert usable(info)


def test_required_gpu_without_cuda_is_an_error() -> None:
    info = probe(require_cuda=True)
    assert info["error"].startswith("CUDA cannot start"), info
    assert info["cuda_note"] is None and info["kind"] == "cpu"
    assert not usable(info)
