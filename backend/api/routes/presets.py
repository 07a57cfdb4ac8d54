"""The seed studies, ready to submit (a config or a sweep each)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, status

from backend.api.errors import responses
from backend.presets import Preset, load_presets

router = APIRouter(prefix="/presets", tags=["presets"], responses=responses(404))


@router.get("", response_model=list[Preset])
def read_presets() -> tuple[Preset, ...]:
    """Every preset, sorted by id."""
    return load_presets()


@router.get("/{preset_id}", response_model=Preset)
def read_preset(preset_id: str = Path(max_length=100)) -> Preset:
    """One preset by id."""
    for preset in load_presets():
        if preset.id == preset_id:
            return preset
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no preset '{preset_id}'")
