"""Reads of per-layer series are bounded in the number of layers a run has (issue 21, item 5).

A run with 4,096 BN layers and 491,520 layer points (120 probe steps each) made
GET /api/runs/{id}/layers?max_points=100 answer 92 MB (47.7 s on the attacker's machine) and
GET /api/compare 100 MB+ for three such runs. Now a read holds at most MAX_LAYERS_PER_READ layers
of a run and MAX_LAYER_VALUES values in all (shared by the runs of a compare answer), says when
it left layers out, reads only the layers it answers from the database, and refuses a
`?layers=` choice that cannot fit with a 422 naming `layers`. On PostgreSQL and SQLite, with
the runs stored as the ingest path stores them (rows in layer_stats, runs ended).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from backend.api import series_cache
from backend.api.deps import get_session
from backend.api.main import create_app
from backend.crud import metrics as crud_metrics
from backend.crud.downsample import MIN_POINTS
from backend.db.models import LAYER_KEYS
from bnlab.core.schema.metrics import MAX_LAYER_VALUES, MAX_LAYERS_PER_READ
from tests.utils.runs import create_random_run
from tests.worker.procs import database_sessions

N_LAYERS, N_STEPS, EVERY = 4096, 120, 10


def _layer_table(run_id: int) -> np.ndarray:
    """(rows, 3 + keys): run_id, layer, step, then each key's value = layer + step / 1e4, so
    every value says which layer and step it belongs to."""
    layer = np.repeat(np.arange(N_LAYERS), N_STEPS)
    step = np.tile(np.arange(N_STEPS) * EVERY, N_LAYERS)
    value = layer + step / 1e4
    return np.column_stack([np.full(layer.shape, run_id), layer, step, *[value] * len(LAYER_KEYS)])


def _store_layers(session, run_id: int) -> None:
    """491,520 rows in a few seconds: COPY on PostgreSQL, executemany on SQLite."""
    table = _layer_table(run_id)
    cols = ", ".join(["run_id", "layer", "step", *LAYER_KEYS])
    if session.get_bind().dialect.name == "postgresql":
        buf = io.StringIO()
        np.savetxt(buf, table, fmt=["%d", "%d", "%d", *["%.6f"] * len(LAYER_KEYS)], delimiter=",")
        raw = session.connection().connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY layer_stats ({cols}) FROM STDIN CSV") as copy:
            copy.write(buf.getvalue())
    else:
        rows = [(int(r[0]), int(r[1]), int(r[2]), *r[3:].tolist()) for r in table]
        marks = ", ".join("?" * (3 + len(LAYER_KEYS)))
        raw = session.connection().connection.driver_connection
        raw.executemany(f"INSERT INTO layer_stats ({cols}) VALUES ({marks})", rows)
    session.commit()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def huge(request, tmp_path_factory) -> Iterator[tuple[TestClient, list[int], list[int]]]:
    """A client on a fresh database with two ended runs of 4,096 layers x 120 steps and seven
    small runs of 3 layers."""
    with database_sessions(request.param, tmp_path_factory.mktemp("layers")) as maker:
        with maker() as s:
            ids = []
            for seed in range(2):
                run = create_random_run(s, status="succeeded", n_steps=N_STEPS, seed=seed)
                run.layer_names = [f"blocks.{i}.bn" for i in range(N_LAYERS)]
                s.commit()
                _store_layers(s, run.id)
                ids.append(run.id)
            smalls = [
                create_random_run(s, status="succeeded", n_steps=50, n_layers=3, seed=k).id
                for k in range(7)
            ]
            count = s.execute(text("SELECT count(*) FROM layer_stats")).scalar()
            assert count == 2 * N_LAYERS * N_STEPS + 7 * 3 * 50
        app = create_app()

        def session():
            with maker() as db:
                yield db

        app.dependency_overrides[get_session] = session
        yield TestClient(app), ids, smalls


def _values(body: dict) -> int:
    """Values in a layers answer: every column's entries (`step` included)."""
    return sum(len(v) for layer in body["layers"] for v in layer.values() if isinstance(v, list))


@pytest.fixture
def reads(monkeypatch) -> dict[int, tuple[int, ...] | None]:
    """Per run id, the layers its rows were read for (None: the run read whole). An empty
    answer cache, so each test's reads reach the database (the PostgreSQL and SQLite runs share
    ids, and the cache is the process's)."""
    monkeypatch.setattr(series_cache, "cache", series_cache.SeriesCache())
    seen: dict[int, tuple[int, ...] | None] = {}
    real = crud_metrics._live_tables

    def spy(session, kind, columns, run_ids, layers=None):
        if kind == "layers":
            seen.update((i, None if layers is None else tuple(layers)) for i in run_ids)
        return real(session, kind, columns, run_ids, layers)

    monkeypatch.setattr(crud_metrics, "_live_tables", spy)
    return seen


def test_layers_answer_is_bounded_and_says_so(huge, reads):
    """?max_points=100 on a 4,096-layer run: before, all 4,096 layers (92 MB); now the first
    MAX_LAYERS_PER_READ, within the value cap, marked truncated, and only those read."""
    client, ids, _ = huge
    res = client.get(f"/api/runs/{ids[0]}/layers", params={"max_points": 100})
    assert res.status_code == 200, res.text[:300]
    body = res.json()
    assert body["layers_total"] == N_LAYERS and body["truncated"] is True
    assert [layer["index"] for layer in body["layers"]] == list(range(MAX_LAYERS_PER_READ))
    assert _values(body) <= MAX_LAYER_VALUES
    assert body["max_points"] <= 100
    assert all(len(layer["step"]) <= body["max_points"] for layer in body["layers"])
    # ~20 bytes per value at most (a float's repr, a comma), plus each layer's name and keys
    assert len(res.content) < 25 * MAX_LAYER_VALUES
    assert reads == {ids[0]: tuple(range(MAX_LAYERS_PER_READ))}  # never the 4,096 layers


def test_full_resolution_is_downsampled_to_the_cap_and_says_so(huge):
    """No max_points: 256 layers x 120 steps x 15 columns fit (460,800 values), so every point
    comes; with every key the cap is reached sooner on a longer run (see the compare test)."""
    client, ids, _ = huge
    body = client.get(f"/api/runs/{ids[0]}/layers").json()
    per_layer = MAX_LAYER_VALUES // ((1 + len(LAYER_KEYS)) * MAX_LAYERS_PER_READ)
    assert body["max_points"] == per_layer
    assert all(layer["raw_points"] == N_STEPS for layer in body["layers"])
    assert all(len(layer["step"]) == min(N_STEPS, per_layer) for layer in body["layers"])


def test_layers_chosen_by_the_caller(huge, reads):
    """?layers=4000-4095,7 answers exactly those layers (ascending), with their own values."""
    client, ids, _ = huge
    res = client.get(
        f"/api/runs/{ids[1]}/layers", params={"layers": "4000-4095,7", "keys": "shift"}
    )
    assert res.status_code == 200, res.text[:300]
    body = res.json()
    assert [layer["index"] for layer in body["layers"]] == [7, *range(4000, 4096)]
    assert body["truncated"] is False and body["layers_total"] == N_LAYERS
    last = body["layers"][-1]
    assert last["name"] == "blocks.4095.bn"
    assert last["shift"] == pytest.approx([4095 + s / 1e4 for s in last["step"]], abs=1e-6)
    assert reads == {ids[1]: (7, *range(4000, 4096))}


@pytest.mark.parametrize(
    "layers, msg",
    [
        ("0-300", f"at most {MAX_LAYERS_PER_READ} layers"),
        ("0-2000000000", f"at most {MAX_LAYERS_PER_READ} layers"),
        ("9-3", "layer indices or ranges"),
    ],
)
def test_layers_choice_refused_with_the_field_named(huge, layers, msg):
    client, ids, _ = huge
    res = client.get(f"/api/runs/{ids[0]}/layers", params={"layers": layers})
    assert res.status_code == 422, res.text[:300]
    detail = res.json()["detail"][0]
    assert detail["field"] == "layers" and msg in detail["msg"], detail


def test_layers_grammar_is_in_the_schema(huge):
    client, _, _ = huge
    params = client.get("/openapi.json").json()["paths"]["/api/runs/{run_id}/layers"]["get"]
    (layers,) = [p for p in params["parameters"] if p["name"] == "layers"]
    assert f"at most {MAX_LAYERS_PER_READ}" in layers["description"]
    assert f"{MAX_LAYER_VALUES:,}" in layers["description"]
    assert client.get("/api/runs/1/layers", params={"layers": "a"}).status_code == 422


def test_compare_shares_the_cap_between_runs(huge, reads):
    """GET /api/compare of two 4,096-layer runs and a small one: the layers of all three hold
    at most MAX_LAYER_VALUES values together (before: every layer of every run, 100 MB+); the
    small run is answered whole and untruncated."""
    client, ids, smalls = huge
    res = client.get("/api/compare", params={"runs": f"{ids[0]},{ids[1]},{smalls[0]}"})
    assert res.status_code == 200, res.text[:300]
    runs = res.json()["runs"]
    assert sum(_values(r["layers"]) for r in runs) <= MAX_LAYER_VALUES
    big, other, little = (r["layers"] for r in runs)
    assert big["truncated"] and other["truncated"] and not little["truncated"]
    assert [layer["index"] for layer in little["layers"]] == [0, 1, 2]
    assert all(len(layer["step"]) >= min(MIN_POINTS, N_STEPS) for layer in big["layers"])
    assert len(res.content) < 25 * MAX_LAYER_VALUES + 2**20  # + the runs and their metrics
    assert reads[ids[0]] == reads[ids[1]] == tuple(range(len(big["layers"])))


def test_compare_refuses_more_chosen_layers_than_fit(huge):
    """Nine runs' shares of the cap hold fewer than 256 layers of 15 columns at MIN_POINTS
    each: asking for 256 is a 422 naming `layers` that says how many fit (not a cut answer)."""
    client, ids, smalls = huge
    runs = ",".join(map(str, [*ids, *smalls]))
    fit = MAX_LAYER_VALUES // 9 // ((1 + len(LAYER_KEYS)) * MIN_POINTS)
    assert fit < MAX_LAYERS_PER_READ  # the premise: 256 layers cannot fit in a ninth
    res = client.get("/api/compare", params={"runs": runs, "layers": "0-255"})
    assert res.status_code == 422, res.text[:300]
    detail = res.json()["detail"][0]
    assert detail["field"] == "layers" and f"at most {fit} layers" in detail["msg"], detail
    res = client.get("/api/compare", params={"runs": runs, "layers": f"0-{fit - 1}"})
    assert res.status_code == 200, res.text[:300]
