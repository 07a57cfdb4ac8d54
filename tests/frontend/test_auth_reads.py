"""The dashboard under BNLAB_AUTH_READS (every read needs the token): it asks for the token
on the first refused read, then the runs table, the run page's data and the event stream
(EventSource, which cannot send a header: the bnlab_token cookie) all work."""

from __future__ import annotations

import httpx
import pytest
from dashboard_stack import start_stack, tiny_config

TOKEN = "reads-t0ken;with=odd chars"  # the cookie must carry any token (URI-encoded)


@pytest.fixture(scope="module")
def locked_stack(tmp_path_factory):
    s = start_stack(
        tmp_path_factory.mktemp("dashboard-locked"),
        token=TOKEN,
        workers=0,
        extra_env={"BNLAB_AUTH_READS": "1"},
    )
    yield s
    s.stop()


EVENT_JS = """(id) => new Promise((resolve) => {
  const source = new EventSource(`/api/events?runs=${id}`);
  const done = (value) => { source.close(); resolve(value); };
  source.addEventListener("run", (e) => done(JSON.parse(e.data)));
  source.addEventListener("error", () => { if (source.readyState === 2) done("refused"); });
  setTimeout(() => done("timeout"), 15000);
})"""


def test_dashboard_asks_token_then_reads_and_streams(locked_stack, page):
    with locked_stack.client() as c:
        run = c.post("/api/runs", json=tiny_config("locked run")).json()
    assert httpx.get(f"{locked_stack.url}/api/runs").status_code == 401

    page.goto(locked_stack.url + "/")
    # Before the token: the browser's own EventSource is refused (401 closes it).
    assert page.evaluate(EVENT_JS, run["id"]) == "refused"
    dialog = page.locator("#token-dialog")
    dialog.wait_for(state="visible", timeout=30_000)
    dialog.locator("input").fill(TOKEN)
    dialog.get_by_role("button", name="Save").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.runs tbody .run-name')]"
        ".some(e => e.textContent.includes('locked run'))",
        timeout=30_000,
    )
    assert page.evaluate("localStorage.getItem('bnlab.token')") == TOKEN
    # The event stream now opens with the cookie and sends the run's state.
    event = page.evaluate(EVENT_JS, run["id"])
    assert isinstance(event, dict) and event["id"] == run["id"] and event["status"] == "queued"
    # A status change reaches the open table live (the table's own EventSource reconnected).
    with locked_stack.client() as c:
        c.post(f"/api/runs/{run['id']}/cancel")
    page.wait_for_function(
        "() => document.querySelector('table.runs tbody')?.textContent.includes('cancelled')",
        timeout=30_000,
    )
    # The run page reads its run with the stored token, without asking again.
    page.goto(f"{locked_stack.url}/runs/{run['id']}")
    page.wait_for_function("() => document.body.textContent.includes('locked run')", timeout=30_000)
    assert dialog.is_hidden()
    assert not page.errors, page.errors
