"""Where a user-given `dataset.path` may point: only inside the datasets root."""

from __future__ import annotations

from pathlib import Path


def resolve_dataset_path(root: Path, path: str) -> Path:
    """Resolve `path` (relative to `root`, or absolute inside it) or raise ValueError.

    Symlinks are resolved first, so a link inside the root that leads out of it is refused.
    """
    root = Path(root).resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"dataset.path must stay inside the datasets root ({root})")
    if not resolved.exists():
        raise ValueError(f"dataset.path '{path}' does not exist under the datasets root")
    return resolved
