"""Domain errors raised by crud and the wire format (no HTTP here); backend/api/errors.py maps
them to status codes, the CLI prints them. Each names what was wrong, so nobody has to guess."""

from __future__ import annotations


class CrudError(Exception):
    """Base class: `message` is safe to show to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FieldError(CrudError, ValueError):
    """A submitted value is not acceptable (422); `field` is its dotted path (`model.widths`)."""

    def __init__(self, field: str, message: str, location: str = "body") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
        self.location = location  # "body" or "query": where the field was sent


class NotFound(CrudError):
    """The thing does not exist (404)."""


class Conflict(CrudError):
    """The request does not fit the thing's current state (409), e.g. deleting a running run."""


class TooLarge(CrudError):
    """The payload is bigger than a configured cap (413)."""
