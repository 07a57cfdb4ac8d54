"""POST /api/sweeps: grid x seeds → runs; caps and errors name the grid field."""

from __future__ import annotations

from backend.db.models import Run, Sweep
from tests.utils.runs import make_config


def _sweep(**extra):
    return {
        "base": make_config(name="sw"),
        "grid": {"model.dropout.rate": [0.1, 0.5], "model.dropout.kind": ["bernoulli", "uniform"]},
        **extra,
    }


def test_create_sweep_expands_grid_times_seeds(client, session):
    """2 x 2 grid x 3 seeds = 12 queued runs, every combination exactly once."""
    res = client.post("/api/sweeps", json=_sweep(seeds=[0, 1, 2]))
    assert res.status_code == 201, res.text
    runs = res.json()["runs"]
    combos = {
        (
            r["config"]["model"]["dropout"]["rate"],
            r["config"]["model"]["dropout"]["kind"],
            r["config"]["train"]["seed"],
        )
        for r in runs
    }
    assert len(runs) == 12 and len(combos) == 12
    assert all(r["status"] == "queued" and r["sweep_id"] == res.json()["id"] for r in runs)


def test_create_sweep_names_runs_by_cell(client):
    """Each run's name says which grid values and seed it has."""
    runs = client.post("/api/sweeps", json=_sweep(seeds=[7])).json()["runs"]
    assert any(
        "rate=0.5" in r["name"] and "kind=uniform" in r["name"] and "seed=7" in r["name"]
        for r in runs
    )


def test_create_sweep_filters_runs_by_sweep(client):
    """GET /api/runs?sweep=ID lists exactly the sweep's runs."""
    body = client.post("/api/sweeps", json=_sweep()).json()
    listed = client.get(f"/api/runs?sweep={body['id']}").json()
    assert listed["count"] == 4 and {r["id"] for r in listed["data"]} == {
        r["id"] for r in body["runs"]
    }


def test_create_sweep_bad_cell_names_grid_field(client, session):
    """A grid value the schema refuses is a 422 naming grid.<path>, and nothing is stored."""
    before = session.query(Run).count(), session.query(Sweep).count()
    res = client.post(
        "/api/sweeps", json={"base": make_config(), "grid": {"model.dropout.rate": [0.1, 1.5]}}
    )
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "grid.model.dropout.rate"
    assert (session.query(Run).count(), session.query(Sweep).count()) == before


def test_create_sweep_unknown_path_names_grid_field(client):
    """A grid path that is not a config field is a 422 naming it."""
    res = client.post(
        "/api/sweeps", json={"base": make_config(), "grid": {"model.dropuot.rate": [0.1]}}
    )
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "grid.model.dropuot.rate"


def test_create_sweep_over_cap_names_grid(client, monkeypatch):
    """More runs than BNLAB_MAX_SWEEP_RUNS is a 422 naming `grid`."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_sweep_runs", 10)
    res = client.post("/api/sweeps", json=_sweep(seeds=[0, 1, 2]))
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "grid"


def test_create_sweep_cap_violation_in_cell_names_grid_field(client, monkeypatch):
    """A cell over the epochs cap names the grid field that set it."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_epochs", 5)
    res = client.post("/api/sweeps", json={"base": make_config(), "grid": {"train.epochs": [1, 9]}})
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "grid.train.epochs"


def test_create_sweep_without_grid_makes_one_run_per_seed(client):
    """An empty grid with seeds repeats the base once per seed."""
    runs = client.post("/api/sweeps", json={"base": make_config(), "seeds": [3, 4]}).json()["runs"]
    assert sorted(r["config"]["train"]["seed"] for r in runs) == [3, 4]
