"""Fixtures for the dashboard's browser tests: the real stack (`bnlab serve`: uvicorn, a real
Celery worker, SQLite, the embedded broker) on a free port, and Debian's Chromium driven by
Playwright. Screenshots land in artifacts/screenshots/ (gitignored)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_stack import CHROMIUM, start_stack, wait_for_workers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The whole local stack, no token; one worker."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    s = start_stack(tmp_path_factory.mktemp("dashboard-stack"))
    try:
        wait_for_workers(s)
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser):
    """A fresh page that records uncaught errors and dialogs (an alert would mean XSS)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.errors = []
    pg.dialogs = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))

    def on_dialog(dialog):
        pg.dialogs.append((dialog.type, dialog.message))
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    context.close()
