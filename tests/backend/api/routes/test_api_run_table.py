"""GET /api/runs as the runs table uses it: sort by a column, a config field or a summary value
(numbers as numbers, missing values last), substring search over names and tags, pages that
neither overlap nor skip, group-by statistics against Python's own, bulk tag and delete. Each
query test runs on PostgreSQL and on SQLite (the two databases evaluate JSON paths differently).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from backend.api.deps import get_session
from backend.api.main import create_app
from backend.db.migrate import upgrade
from backend.db.session import make_engine
from tests.utils.runs import create_random_run, make_config

RATES = [0.05, 0.5, 0.1, 0.3, 0.1, 0.2]  # 0.05 < 0.1 < 0.5 as numbers, not as text
ACCS = [0.7, 0.91, None, 0.4, 0.8, 0.65]  # one run without a summary value


@pytest.fixture(params=["postgresql", "sqlite"])
def table(request, tmp_path, api_db) -> Iterator[tuple[TestClient, list[int], str]]:
    """A client on a fresh database holding six runs tagged with a unique tag."""
    url = api_db if request.param == "postgresql" else f"sqlite:///{tmp_path / 'bnlab.db'}"
    if request.param == "sqlite":
        upgrade(url)
    engine = make_engine(url)
    maker = sessionmaker(bind=engine, expire_on_commit=False)
    tag = f"tbl{request.param}{id(tmp_path)}"
    ids = []
    with maker() as s:
        for k, (rate, acc) in enumerate(zip(RATES, ACCS, strict=True)):
            cfg = make_config(
                name=f"Sweep {k} {'Alpha' if k % 2 else 'beta'}",
                tags=[tag, "Odd-One" if k == 3 else "common"],
                **{"model.dropout.rate": rate, "train.seed": k % 2},
            )
            summary = {"test_acc_eval": acc, "test_acc_train_mode": {"8": 0.1 * k}}
            ids.append(create_random_run(s, config=cfg, status="succeeded", summary=summary).id)
    app = create_app()

    def session():
        with maker() as s:
            yield s

    app.dependency_overrides[get_session] = session
    yield TestClient(app), ids, tag
    with maker() as s:  # the PostgreSQL database is shared by the session: leave it clean
        for run_id in ids:
            from backend.db.models import Run

            run = s.get(Run, run_id)
            if run is not None:
                s.delete(run)
        s.commit()
    engine.dispose()


def listed(client: TestClient, **query) -> list[int]:
    res = client.get("/api/runs", params={"limit": 100, **query})
    assert res.status_code == 200, res.text
    return [r["id"] for r in res.json()["data"]]


def test_sort_by_config_field_numerically(table):
    """config.model.dropout.rate sorts as numbers both ways; equal values break ties by id."""
    client, ids, tag = table
    by_rate = sorted(range(6), key=lambda k: (RATES[k], ids[k]))
    assert listed(client, tag=tag, sort="config.model.dropout.rate") == [ids[k] for k in by_rate]
    down = sorted(range(6), key=lambda k: (-RATES[k], -ids[k]))
    assert listed(client, tag=tag, sort="-config.model.dropout.rate") == [ids[k] for k in down]


def test_sort_by_summary_missing_last(table):
    """A summary metric sorts with the run that lacks it last, ascending and descending."""
    client, ids, tag = table
    have = [k for k in range(6) if ACCS[k] is not None]
    up = listed(client, tag=tag, sort="summary.test_acc_eval")
    assert up == [ids[k] for k in sorted(have, key=lambda k: ACCS[k])] + [ids[2]]
    down = listed(client, tag=tag, sort="-summary.test_acc_eval")
    assert down == [ids[k] for k in sorted(have, key=lambda k: -ACCS[k])] + [ids[2]]
    nested = listed(client, tag=tag, sort="-summary.test_acc_train_mode.8")
    assert nested == ids[::-1]


def test_sort_by_column_and_bad_sort_is_422(table):
    client, ids, tag = table
    assert listed(client, tag=tag, sort="name") == [
        ids[k] for k in sorted(range(6), key=lambda k: f"Sweep {k} {'Alpha' if k % 2 else 'beta'}")
    ]
    for bad in ("config.train.lr;drop", "password", "config", "summary.a.b.c.d.e.f.g.h"):
        res = client.get("/api/runs", params={"sort": bad})
        assert res.status_code == 422 and res.json()["detail"][0]["field"] == "sort", bad


def test_search_matches_names_and_tags_as_substrings(table):
    """q is a case-insensitive substring of the name or of any tag."""
    client, ids, tag = table
    assert listed(client, tag=tag, q="alpha") == [ids[5], ids[3], ids[1]]
    assert listed(client, q="odd-on") == [ids[3]]  # part of a tag, another case
    assert listed(client, tag=tag, q="%") == []  # LIKE wildcards are literal


def test_pages_cover_sorted_runs_once(table):
    """Offset pages of a sorted list neither overlap nor skip, and count is the total."""
    client, ids, tag = table
    full = listed(client, tag=tag, sort="config.model.dropout.rate")
    pages = []
    for offset in range(0, 6, 4):
        body = client.get(
            "/api/runs",
            params={"tag": tag, "sort": "config.model.dropout.rate", "limit": 4, "offset": offset},
        ).json()
        assert body["count"] == 6
        pages += [r["id"] for r in body["data"]]
    assert pages == full


def test_groups_statistics(table):
    """Grouping by train.seed: n, ids, mean, sample sd, min, max as Python computes them."""
    client, ids, tag = table
    res = client.get(
        "/api/runs/groups",
        params={"tag": tag, "group_by": "config.train.seed", "metrics": "summary.test_acc_eval"},
    )
    assert res.status_code == 200, res.text
    groups = res.json()["groups"]
    assert [g["value"] for g in groups] == [0, 1]
    for g in groups:
        members = [k for k in range(6) if k % 2 == g["value"]]
        assert sorted(g["ids"]) == sorted(ids[k] for k in members) and g["n"] == 3
        accs = [ACCS[k] for k in members if ACCS[k] is not None]
        stats = g["metrics"]["summary.test_acc_eval"]
        assert stats["n"] == len(accs)
        assert stats["mean"] == pytest.approx(statistics.mean(accs))
        assert stats["sd"] == pytest.approx(statistics.stdev(accs))
        assert (stats["min"], stats["max"]) == (min(accs), max(accs))
    by_list = client.get("/api/runs/groups", params={"tag": tag, "group_by": "config.model.widths"})
    assert [g["value"] for g in by_list.json()["groups"]] == [[16, 16]]
    assert client.get("/api/runs/groups", params={"group_by": "nope"}).status_code == 422


def test_bulk_tag_untag_delete(table):
    """Tags are added and removed on many runs; delete skips what is still running."""
    client, ids, tag = table
    res = client.post(
        "/api/runs/bulk", json={"ids": ids[:3] + [2**31 - 1], "action": "tag", "tags": ["picked"]}
    )
    assert res.status_code == 200 and sorted(res.json()["done"]) == sorted(ids[:3])
    assert res.json()["skipped"] == [{"id": 2**31 - 1, "reason": "not found"}]
    assert sorted(listed(client, tag="picked")) == sorted(ids[:3])
    assert client.get(f"/api/runs/{ids[0]}").json()["config"]["tags"][-1] == "picked"
    client.post("/api/runs/bulk", json={"ids": ids[:1], "action": "untag", "tags": ["picked"]})
    assert sorted(listed(client, tag="picked")) == sorted(ids[1:3])
    bad = client.post("/api/runs/bulk", json={"ids": ids, "action": "explode"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "action"
    res = client.post("/api/runs/bulk", json={"ids": ids[4:], "action": "delete"})
    assert sorted(res.json()["done"]) == sorted(ids[4:])
    assert listed(client, tag=tag) == ids[3::-1]


def test_lean_list_drops_summary_arrays(table):
    """lean=1 keeps the summary's scalars and mappings of scalars, drops per-channel arrays."""
    client, ids, tag = table
    full = client.get("/api/runs", params={"tag": tag, "limit": 1}).json()["data"][0]["summary"]
    lean = client.get("/api/runs", params={"tag": tag, "limit": 1, "lean": 1}).json()["data"][0]
    assert lean["summary"] == full  # the fixture's summaries have no arrays
    from backend.crud.run_list import lean_summary

    summary = {
        "test_acc_eval": 0.9,
        "test_acc_train_mode": {"8": 0.5},
        "shift_per_channel": {"bn1": [1.0, 2.0]},
        "curve": [1, 2],
    }
    assert lean_summary(summary) == {"test_acc_eval": 0.9, "test_acc_train_mode": {"8": 0.5}}


def test_lean_list_drops_layer_names(table):
    """A run with thousands of long layer names: lean=1 answers without them (the names of a
    4,096-layer run at 200 characters each would be 800 kB of one page)."""
    client, ids, tag = table
    from backend.db.models import Run

    names = [f"{'block' * 39}.{i}" for i in range(4096)]
    sessions = client.app.dependency_overrides[get_session]()
    session = next(sessions)
    session.get(Run, ids[0]).layer_names = names
    session.commit()
    sessions.close()
    full = client.get("/api/runs", params={"ids": str(ids[0])}).json()["data"][0]
    lean = client.get("/api/runs", params={"ids": str(ids[0]), "lean": 1})
    assert full["layer_names"] == names
    assert lean.json()["data"][0]["layer_names"] is None and len(lean.content) < 20_000
