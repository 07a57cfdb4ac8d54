"""Reproducibility: what a run records about its numerics, and deterministic mode.

A CPU run's figures depend on the number of intra-op threads: reductions (matmul, sums) split
their work by thread, and float addition is not associative, so two threads give results
that differ in the last bits from one thread, and training amplifies that (a preset's test
accuracy moved from 97.49 % to 98.05 %). Deterministic mode (`bnlab run --deterministic`)
uses one thread and torch.use_deterministic_algorithms(True), so a run repeats bit for bit
on the same machine, torch version and device.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def make_deterministic() -> None:
    """One intra-op and inter-op thread, deterministic algorithms (errors on ops that have
    none), cuDNN deterministic and without autotuning. Call before any torch work."""
    # cuBLAS needs a fixed workspace for deterministic results (CUDA >= 10.2); harmless on CPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set or parallel work started: intra-op threads decide sums
        pass
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures of a run depend on besides its config (stored in its summary)."""
    return {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda": torch.version.cuda,
    }
