"""`bnlab run CONFIG.json --out results.json`: one experiment in-process, no server or broker.

The CLI imports this lazily (`from worker.local import run_local`) so that the backend never
imports torch. An invalid config raises ConfigError (message names the field); the CLI
prints it and exits with code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.settings import Settings
from bnlab.engine.repro import make_deterministic
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import ConfigError, train, validate_config

__all__ = ["ConfigError", "run_local"]


def load_config_file(config_path: str | Path) -> dict[str, Any]:
    """The JSON object in config_path, or ConfigError saying what is wrong with the file."""
    path = Path(config_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object (an ExperimentConfig)")
    return data


def run_local(
    config_path: str | Path,
    out_path: str | Path | None = None,
    progress: bool = True,
    *,
    datasets_root: Path | None = None,
    uploads_dir: Path | None = None,
    export_dir: Path | None = None,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Validate, train with a MemorySink and write {"config","metrics","layers","summary"} to
    out_path.

    datasets_root / uploads_dir default to the Settings' directories (BNLAB_DATASETS_DIR ...).
    The returned dict also carries "status" and "error". deterministic: one torch thread and
    deterministic algorithms for this process (engine/repro.py), so the run repeats bit for bit.
    """
    if deterministic:
        make_deterministic()
    cfg = validate_config(load_config_file(config_path))
    if datasets_root is None or uploads_dir is None:
        settings = Settings()
        datasets_root = datasets_root or Path(settings.datasets_dir)
        uploads_dir = uploads_dir or Path(settings.uploads_dir)
    sink = MemorySink()
    try:
        result = train(
            cfg,
            sink,
            datasets_root=datasets_root,
            uploads_dir=uploads_dir,
            export_dir=export_dir,
            progress=progress,
        )
    except ValueError as e:  # bad dataset files etc.: the message names the field
        raise ConfigError(str(e)) from None
    out = sink.as_dict(cfg.model_dump(mode="json"))
    out["status"], out["error"] = result.status, result.error
    if out_path is not None:
        Path(out_path).write_text(json.dumps(out, indent=1))
    return out
