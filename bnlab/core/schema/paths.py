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
        # The rule, not the server's absolute paths (they tell a stranger about the host).
        raise ValueError(
            "dataset.path must lead to a folder inside the datasets root (BNLAB_DATASETS_DIR): "
            "a relative path without '..' and without links out of it"
        )
    if not resolved.exists():
        raise ValueError(f"dataset.path '{path}' does not exist under the datasets root")
    return resolved
