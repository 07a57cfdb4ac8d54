"""Split sizes without loading data: what the engine's splits hold, for checks at submission.

bnlab/engine/data.py splits with these same functions (a drift test loads every built-in
dataset and compares), so `train.batch_size` larger than the training split is refused with a
422 before a run is queued instead of training one step at chance accuracy.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

from bnlab.core import registry

TEST_FRACTION = 0.2  # held out as the test split by sets without their own
GENERATED_SAMPLES = 4000  # mnist1d / synthetic size when dataset.n_samples is unset


def held_out(n: int, fraction: float) -> int:
    """Samples a seeded split of n takes out (at least one)."""
    return max(1, int(round(n * fraction)))


def train_split_size(
    total: int, *, own_test_split: bool, val_fraction: float, limit: int | None
) -> int:
    """Training samples left of `total` after the test split (unless the set has its own),
    dataset.limit and the validation split, in the engine's order."""
    n = total if own_test_split else total - held_out(total, TEST_FRACTION)
    if limit:
        n = min(n, limit)
    return n - held_out(n, val_fraction)


def find_idx_file(folder: Path, name: str) -> Path | None:
    """An IDX file of `folder`, raw or gzipped, in it or in its raw/ subfolder (torchvision's
    layout); None if absent."""
    for sub in (folder, folder / "raw"):
        for cand in (sub / name, sub / f"{name}.gz"):
            if cand.is_file():
                return cand
    return None


def idx_train_samples(folder: Path) -> int | None:
    """Training samples of an IDX folder from its label file's 8-byte header (magic 0x0801,
    big-endian count), without reading the data; None if the header is missing or not that
    (the engine names the problem when it loads the files)."""
    path = find_idx_file(folder, registry.IDX_FILES["train_y"])
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if head[:2] == b"\x1f\x8b":
                f.seek(0)
                with gzip.GzipFile(fileobj=f) as g:
                    head = g.read(8)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if len(head) < 8 or head[:4] != b"\x00\x00\x08\x01":
        return None
    return struct.unpack(">I", head[4:])[0]


def dataset_total(name: str, n_samples: int | None, upload_rows: int | None) -> int | None:
    """Samples of a dataset before any split, when known without reading its files."""
    spec = registry.dataset(name)
    if spec.samples is not None:
        return spec.samples
    if spec.source == "generated":
        return n_samples or GENERATED_SAMPLES
    if spec.source == "upload":
        return upload_rows
    return None  # read from files at dataset.path: the engine checks when it loads them
