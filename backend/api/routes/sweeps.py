"""Sweeps: a grid over dotted config paths (x seeds) becomes its runs."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import SessionDep, TokenDep
from backend.api.errors import responses
from backend.crud import sweeps as crud
from backend.db.models import Sweep
from bnlab.core.schema.sweeps import SweepCreate, SweepPublic

router = APIRouter(prefix="/sweeps", tags=["sweeps"], responses=responses(401))


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=SweepPublic, dependencies=[TokenDep]
)
def create_sweep(session: SessionDep, sweep: SweepCreate) -> Sweep:
    """Expand `base` over `grid` (and `seeds`) into queued runs; 422 names the grid field."""
    return crud.create_sweep(session=session, sweep=sweep)
