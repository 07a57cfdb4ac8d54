"""SQLAlchemy 2 models and sessions, shared by the API, the worker and the CLI."""
