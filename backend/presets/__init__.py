"""The seed studies: every `backend/presets/*.json` is a ready-to-submit config or sweep with
the question it answers, where to look in the dashboard and what to expect (docs/science.md §7).

A preset file: {"id", "title", "question", "look_at", "expected", "kind": "run" | "sweep",
"config" (kind run) | "sweep" (kind sweep, a SweepCreate), "full": optional GPU-sized variant
of the same kind}. Every file is validated on load, so a broken preset fails loudly and early.

Every config a preset holds carries the tag `preset:<id>` (added on load, so the files cannot
forget it): the runs it makes say which study they belong to, and the compare view shows that
study's question, what to look at and the expected outcome above the charts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.crud.sweeps import cell_configs
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.sweeps import SweepCreate

PRESETS_DIR = Path(__file__).resolve().parent
PRESET_TAG = "preset:"  # + the preset id; the dashboard (frontend/js/views/story.js) reads it back


def preset_tag(preset_id: str) -> str:
    """The tag every run made from preset `preset_id` carries."""
    return f"{PRESET_TAG}{preset_id}"


def _with_tag(tags: list[str], tag: str) -> list[str]:
    return tags if tag in tags else [*tags, tag]


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    question: str
    look_at: str
    expected: str
    kind: Literal["run", "sweep"]
    config: ExperimentConfig | None = None
    sweep: SweepCreate | None = None
    full: dict[str, Any] | None = None  # same kind as the preset; validated below

    @model_validator(mode="after")
    def _payload_matches_kind(self) -> Preset:
        payload, other = (
            (self.config, self.sweep) if self.kind == "run" else (self.sweep, self.config)
        )
        if payload is None or other is not None:
            raise ValueError(
                f"a '{self.kind}' preset needs '{'config' if self.kind == 'run' else 'sweep'}' only"
            )
        if self.full is not None:
            full = (ExperimentConfig if self.kind == "run" else SweepCreate).model_validate(
                self.full
            )
            if isinstance(full, SweepCreate):
                cell_configs(full)
        if self.sweep is not None:
            cell_configs(self.sweep)  # every cell must be a valid config, not only the base
        self._tag_configs()
        return self

    def _tag_configs(self) -> None:
        """Add `preset:<id>` to the tags of every config (the full variant's too)."""
        tag = preset_tag(self.id)
        if self.config is not None:
            self.config.tags = _with_tag(self.config.tags, tag)
        if self.sweep is not None:
            self.sweep.base.tags = _with_tag(self.sweep.base.tags, tag)
        if self.full is not None:
            base = self.full.get("base", self.full) if self.kind == "sweep" else self.full
            base["tags"] = _with_tag(list(base.get("tags", [])), tag)


def load_preset(path: Path) -> Preset:
    """One preset file, validated; the id must match the file name."""
    preset = Preset.model_validate(json.loads(path.read_text(encoding="utf-8")))
    if preset.id != path.stem:
        raise ValueError(f"{path.name}: id '{preset.id}' must equal the file name")
    return preset


@lru_cache(maxsize=1)
def load_presets(folder: Path = PRESETS_DIR) -> tuple[Preset, ...]:
    """Every preset in `folder`, sorted by id."""
    return tuple(load_preset(p) for p in sorted(folder.glob("*.json")))
