"""Time to render the dashboard's compare view, measured in Chromium.

Starts the real stack (`bnlab serve`, no worker needed) on a free port with a private data
directory, writes N synthetic finished runs (L BN layers x S probe steps each) straight into
its SQLite database, then opens /compare?runs=... in headless Chromium several times and
reports, per load: the time from navigation start to every chart drawn (module loading, the
REST fetch — one GET /api/compare since the batched endpoint, 3 x N requests before — and
Plotly rendering), and the part spent fetching.

    python3 benchmarks/bench_dashboard.py                  # 20 runs x 8 layers x 1000 points
    python3 benchmarks/bench_dashboard.py --runs 50 --repeats 3 --json out.json
    python3 benchmarks/bench_dashboard.py --gl on          # force WebGL traces
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "frontend")]  # backend + the stack helper
import benchlib  # noqa: E402
from dashboard_stack import CHROMIUM, CHROMIUM_ARGS, seed_runs, start_stack  # noqa: E402

COUNT_JS = """() => {
  const divs = [...document.querySelectorAll('.js-plotly-plot')];
  const traces = divs.flatMap(d => d.data);
  return {charts: divs.length, traces: traces.length,
          gl_traces: traces.filter(t => t.type === 'scattergl').length,
          points: traces.reduce((n, t) => n + (t.x ? t.x.length : 0), 0)};
}"""


RENDERER_JS = """() => { try { const gl = document.createElement('canvas').getContext('webgl');
  const i = gl.getExtension('WEBGL_debug_renderer_info');
  return String(gl.getParameter(i.UNMASKED_RENDERER_WEBGL)); } catch (e) { return 'none'; } }"""
GL_PARAM = {"auto": "", "on": "&gl=1", "off": "&gl=0"}


def measure(url: str, ids: list[int], repeats: int, gl: str = "auto") -> dict:
    from playwright.sync_api import sync_playwright

    loads = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # One context, as a returning user: the first (cold) load fills the HTTP and code caches
        # (plotly.min.js is 4.8 MB); it is reported apart from the warm loads.
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        for _ in range(repeats + 1):
            page = context.new_page()
            page.goto(f"{url}/compare?runs={','.join(map(str, ids))}{GL_PARAM[gl]}")
            page.wait_for_selector("body[data-ready=compare]", timeout=120_000)
            loads.append(
                {
                    **page.evaluate("window.__bnlabTimings"),
                    **page.evaluate(COUNT_JS),
                    "webgl_renderer": page.evaluate(RENDERER_JS),
                }
            )
            page.close()
        browser.close()
    cold, loads = loads[0], loads[1:]
    ready = [x["ready_ms"] for x in loads]
    return {
        "cold_ready_ms": cold["ready_ms"],
        "ready_ms_median": statistics.median(ready),
        "ready_ms_min": min(ready),
        "ready_ms_max": max(ready),
        "fetch_ms_median": statistics.median(x["fetch_ms"] for x in loads),
        "view_ms_median": statistics.median(x["total_ms"] for x in loads),
        "charts": loads[0]["charts"],
        "traces": loads[0]["traces"],
        "gl_traces": loads[0]["gl_traces"],
        "points_drawn": loads[0]["points"],
        "webgl_renderer": loads[0]["webgl_renderer"],
        "loads": loads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--points", type=int, default=1000, help="probe steps per run and layer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--gl",
        choices=sorted(GL_PARAM),
        default="auto",
        help="WebGL traces: auto (hardware GL only), on, off",
    )
    ap.add_argument("--json", type=Path, help="also write the result here")
    benchlib.add_figures_argument(ap)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bnlab-bench-dash-") as tmp:
        # SQLite and the embedded broker in a private data directory: no shared service
        print(f"waiting up to {benchlib.start_seconds():.0f} s for bnlab serve's /api/health")
        stack = start_stack(Path(tmp), workers=0, timeout_s=benchlib.start_seconds())
        try:
            ids = seed_runs(
                stack.database_url, n_runs=args.runs, n_layers=args.layers, n_steps=args.points
            )
            result = {
                "runs": args.runs,
                "layers": args.layers,
                "points_per_series": args.points,
                "gl": args.gl,
                **measure(stack.url, ids, args.repeats, args.gl),
            }
        finally:
            stack.stop()
    loads = result.pop("loads")
    print(json.dumps(result, indent=2))
    print(
        f"compare view, {args.runs} runs x {args.layers} layers x {args.points} points: "
        f"{result['ready_ms_median']:.0f} ms median from navigation to all charts drawn "
        f"({result['fetch_ms_median']:.0f} ms of it fetching; first, cold load "
        f"{result['cold_ready_ms']:.0f} ms), {result['traces']} traces, "
        f"{result['points_drawn']} points ({result['gl_traces']} WebGL traces), "
        f"over {len(loads)} warm loads; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if args.json:
        args.json.write_text(json.dumps({**result, "loads": loads}, indent=2))
    out = benchlib.Figures("dashboard", args.figures)
    out.add(
        f"compare view, {args.runs} runs x {args.layers} layers x {args.points} points "
        f"({result['traces']} traces): navigation to every chart drawn, warm",
        round(result["ready_ms_median"]),
        "ms",
        spread=f"[{result['ready_ms_min']:.0f}, {result['ready_ms_max']:.0f}]",
        baseline=f"of it fetching {result['fetch_ms_median']:.0f} ms; cold load "
        f"{result['cold_ready_ms']:.0f} ms",
    )


if __name__ == "__main__":
    main()
