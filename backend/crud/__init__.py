"""Keyword-only data functions shared by the API, the worker and the CLI (docs/design.md,
"crud is keyword-only and shared").
No FastAPI here: errors are the plain exceptions of `bnlab.core.errors`."""
