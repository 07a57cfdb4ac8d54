#!/usr/bin/env python3
"""Dashboard screenshots for docs/studies.md: submit study presets to a running bnlab stack,
wait for their runs, and save the compare view of each as docs/study-<id>.png.

    python -m bnlab.cli serve --data-dir /tmp/bnlab-shots --port 8123 &   # a private stack
    python scripts/studies_screenshots.py --url http://127.0.0.1:8123 variance_shift pooling

Playwright drives the system Chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "diverged", "cancelled"}


def call(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def submit_and_wait(base: str, preset_id: str, timeout_s: float = 900) -> list[int]:
    """Submit the preset's CPU variant; return its run ids once every run has finished."""
    preset = call(f"{base}/api/presets/{preset_id}")
    if preset["kind"] == "sweep":
        ids = [r["id"] for r in call(f"{base}/api/sweeps", "POST", preset["sweep"])["runs"]]
    else:
        ids = [call(f"{base}/api/runs", "POST", preset["config"])["id"]]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(call(f"{base}/api/runs/{i}")["status"] in TERMINAL for i in ids):
            return ids
        time.sleep(2)
    raise TimeoutError(f"{preset_id}: runs {ids} did not finish in {timeout_s} s")


def screenshot(base: str, ids: list[int], path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{base}/compare?runs={','.join(map(str, ids))}")
        page.wait_for_selector("body[data-ready=compare]", timeout=60_000)
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("presets", nargs="+")
    p.add_argument("--url", default="http://127.0.0.1:8123")
    args = p.parse_args(argv)
    for preset_id in args.presets:
        ids = submit_and_wait(args.url.rstrip("/"), preset_id)
        out = ROOT / "docs" / f"study-{preset_id}.png"
        screenshot(args.url.rstrip("/"), ids, out)
        print(f"{preset_id}: runs {ids} → {out.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
