"""Epoch-end checkpoints: written atomically, read back with torch.load(weights_only=True).

A checkpoint holds everything a resumed run needs to continue bit-for-bit on CPU: model,
optimizer, every RNG state (torch CPU and CUDA, numpy, python), the step and epoch, and
the probe and metric accumulators of the open probe window. Only tensors, numbers,
strings, lists and dicts are stored, so the safe loader reads it and nothing is unpickled
that could run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Bumped when the checkpoint's layout changes: an older checkpoint then starts afresh.
FORMAT = 3


def config_fingerprint(cfg: Any) -> str:
    """Hash of the fields that shape training (not name/tags) and of the checkpoint format:
    a checkpoint only resumes its own config, written by this layout."""
    data = cfg.model_dump(mode="json", exclude={"name", "tags"})
    return hashlib.sha256(json.dumps([FORMAT, data], sort_keys=True).encode()).hexdigest()


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *map(_plain, np_state[2:]),
        ],
        "python": _plain(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuple(state["python"]))


def _plain(x: Any) -> Any:
    return [_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuple(x: Any) -> Any:
    return tuple(_tuple(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to path atomically: a crash leaves the previous checkpoint or none, never
    half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The checkpoint at path, or None if there is none. weights_only: no pickled code can run."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=True)
