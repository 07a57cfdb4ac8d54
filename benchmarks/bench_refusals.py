"""How long the API takes to refuse what it must refuse fast: the latencies that used to be
asserted as wall-clock bounds in tests (a loaded CI machine failed them), measured here.

    python benchmarks/bench_refusals.py [--repeats 5]

On an in-process app (FastAPI TestClient) over a scratch SQLite database:
1. an .npz bomb (3 MB inflating to 3.2 GB) posted to /api/datasets: refused from its header
   (inflating it took 40 s before the fix);
2. a sweep with 10,000 grid keys: refused by the key cap (the quadratic path took 59 s);
3. GET /api/runs with the database down (a PostgreSQL port where nothing listens): 503;
4. GET /api/health with the broker down (a Redis port where nothing listens): degraded.
Each is reported as the median [lowest, highest] over the repeats, in seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


FIGURES = None  # benchlib.Figures, set by main()


def _timed(fn, repeats: int, what: str = "") -> str:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if FIGURES is not None and what:
        FIGURES.add(
            what,
            round(statistics.median(times), 3),
            "s",
            spread=f"[{min(times):.3f}, {max(times):.3f}]",
        )
    return f"{statistics.median(times):.3f} s [{min(times):.3f}, {max(times):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import benchlib

    benchlib.add_figures_argument(ap)
    args = ap.parse_args()
    global FIGURES
    FIGURES = benchlib.Figures("refusals", args.figures)

    from fastapi.testclient import TestClient

    from backend import broker
    from backend.api.deps import get_session
    from backend.api.main import create_app
    from backend.db.migrate import upgrade
    from backend.db.session import get_sessionmaker
    from backend.settings import Settings, settings
    from tests.utils.net import free_port
    from tests.utils.npz_bomb import write_npz_bomb
    from tests.utils.runs import make_config

    tmp = Path(tempfile.mkdtemp(prefix="bnlab_bench_refusals_"))
    settings.data_dir = tmp
    url = f"sqlite:///{tmp / 'bnlab.db'}"
    upgrade(url)
    settings.database_url_ = url
    app = create_app()

    make = get_sessionmaker(url)

    def override():
        with make() as s:
            yield s

    app.dependency_overrides[get_session] = override
    bomb = tmp / "bomb.npz"
    write_npz_bomb(bomb, shape=(400_000, 1000))
    data = bomb.read_bytes()
    grid = {"base": make_config(), "grid": {f"model.k{i}": [1] for i in range(10_000)}}

    with TestClient(app) as c:
        c.post("/api/sweeps", json={"grid": {"x": []}})  # the first request builds caches

        def post_bomb():
            files = {"file": ("bomb.npz", data, "application/octet-stream")}
            assert c.post("/api/datasets", files=files).status_code == 422

        def post_grid():
            assert c.post("/api/sweeps", json=grid).status_code == 422

        print(
            "npz bomb refused:       ",
            _timed(post_bomb, args.repeats, "an .npz bomb (3 MB inflating to 3.2 GB) refused"),
        )
        print(
            "10,000 grid keys refused:",
            _timed(post_grid, args.repeats, "a sweep of 10,000 grid keys refused"),
        )

        dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2"
        dead_make = get_sessionmaker(dead_db)

        def dead_override():
            with dead_make() as s:
                yield s

        app.dependency_overrides[get_session] = dead_override

        def read_dead():
            assert c.get("/api/runs").status_code == 503

        print(
            "runs, database down:    ",
            _timed(read_dead, args.repeats, "GET /api/runs with the database down: 503"),
        )
        app.dependency_overrides[get_session] = override
        broker.celery_app = broker.make_celery(
            Settings(BNLAB_BROKER_URL=f"redis://127.0.0.1:{free_port()}/1")
        )

        def health_dead_broker():
            assert c.get("/api/health").json()["status"] == "degraded"

        print(
            "health, broker down:    ",
            _timed(
                health_dead_broker, args.repeats, "GET /api/health with the broker down: degraded"
            ),
        )


if __name__ == "__main__":
    main()
