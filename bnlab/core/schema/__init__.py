"""Pydantic schemas shared by the API, worker, engine, CLI and dashboard (no torch, no SQL)."""
