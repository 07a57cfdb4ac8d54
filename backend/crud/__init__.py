"""Keyword-only data functions shared by the API, the worker and the CLI (STYLE.md rule 3).
No FastAPI here: errors are the plain exceptions of `backend.crud.errors`."""
