"""Split sizes without loading data: what the engine's splits hold, for checks at submission.

worker/engine/data.py splits with these same functions (a drift test loads every built-in
dataset and compares), so `train.batch_size` larger than the training split is refused with a
422 before a run is queued instead of training one step at chance accuracy.
"""

from __future__ import annotations

from backend.schema import registry

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
