"""Dependencies shared by the routes: a database session, the write token, a run or 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.api.auth import token_matches
from backend.crud.runs import get_run
from backend.db.models import Run
from backend.db.session import get_sessionmaker
from bnlab.core.errors import NotFound

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database: larger ones are simply not found


def get_session() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="needed for writes when BNLAB_API_TOKEN is set")


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the bearer token matches BNLAB_API_TOKEN (when one is set)."""
    # Constant-time comparison; the token itself is never logged or echoed back. The
    # TokenGate middleware (backend/api/auth.py) has already checked it before the body.
    if not token_matches(credentials.credentials if credentials else None):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong API token",
            headers={"WWW-Authenticate": "Bearer"},
        )


TokenDep = Depends(require_token)


def load_run(session: SessionDep, run_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Run:
    try:
        return get_run(session=session, run_id=run_id)
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None


RunDep = Annotated[Run, Depends(load_run)]
