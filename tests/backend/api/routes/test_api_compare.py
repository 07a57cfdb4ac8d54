"""GET /api/compare: many runs' rows, metrics and layers in one answer, equal to the per-run
endpoints' answers; bad input is a 4xx naming the field."""

from __future__ import annotations

import pytest

from backend.api.routes.compare import MAX_RUNS
from backend.db.models import LAYER_KEYS, LayerStat, Run, SeriesPack
from tests.utils.runs import add_points, create_random_run


@pytest.fixture
def three_runs(session):
    """An ended run with layers, a running one, and an ended one without BN layers."""
    ended = create_random_run(session, status="succeeded", n_steps=300, n_layers=3, every=1)
    running = create_random_run(session, status="running", n_steps=50, n_layers=2, seed=1)
    plain = create_random_run(session, status="failed", n_steps=20, seed=2)
    return [ended.id, running.id, plain.id]


def _compare(client, ids, **query):
    return client.get("/api/compare", params={"runs": ",".join(map(str, ids)), **query})


def test_read_compare_equals_per_run_answers(client, three_runs):
    """Per run: the same run row, metrics (+ X-Raw-Points) and layers as the per-run endpoints."""
    query = {"max_points": 64}
    body = _compare(client, three_runs, layer_keys="train_var,shift", **query).json()
    assert [r["run"]["id"] for r in body["runs"]] == three_runs
    for entry, run_id in zip(body["runs"], three_runs, strict=True):
        metrics = client.get(f"/api/runs/{run_id}/metrics", params=query)
        layers = client.get(
            f"/api/runs/{run_id}/layers", params={"keys": "train_var,shift", **query}
        )
        assert entry["run"] == client.get(f"/api/runs/{run_id}").json()
        assert entry["metrics"] == metrics.json()
        assert entry["metrics_raw_points"] == int(metrics.headers["X-Raw-Points"])
        assert entry["layers"] == layers.json()


def test_read_compare_cold_and_cached_answers_agree(client, three_runs):
    """The first answer (read from rows, packed) and later ones (packs, cache) are the same."""
    first = _compare(client, three_runs, max_points=1000).json()
    assert _compare(client, three_runs, max_points=1000).json() == first
    assert (
        _compare(client, three_runs, max_points=999).json()["runs"][0]["layers"]
        == client.get(f"/api/runs/{three_runs[0]}/layers?max_points=999").json()
    )


def test_read_compare_keys_filter(client, three_runs):
    """layer_keys and metric_keys keep only those columns (and step)."""
    body = _compare(client, three_runs, layer_keys="eval_var", metric_keys="val_acc,lr").json()
    for entry in body["runs"]:
        assert set(entry["metrics"]) == {"step", "val_acc", "lr"}
        for layer in entry["layers"]["layers"]:
            assert set(layer) == {"index", "name", "raw_points", "step", "eval_var"}
    assert (
        len(body["runs"][0]["layers"]["layers"]) == 3 and body["runs"][2]["layers"]["layers"] == []
    )


def test_read_compare_all_keys_by_default(client, three_runs):
    """Without keys, every layer key is served."""
    layer = _compare(client, three_runs[:1]).json()["runs"][0]["layers"]["layers"][0]
    assert set(LAYER_KEYS) <= set(layer)


def test_read_compare_downsamples(client, session, three_runs):
    """max_points caps every series, keeps the endpoints and a one-step dip; raw counts stay."""
    session.query(LayerStat).filter_by(run_id=three_runs[0], layer=1, step=137).update(
        {"shift": 0.0}
    )
    session.commit()
    body = _compare(client, three_runs, max_points=40, layer_keys="shift").json()
    ended = body["runs"][0]
    assert ended["metrics_raw_points"] == 300 and len(ended["metrics"]["step"]) <= 40
    for layer in ended["layers"]["layers"]:
        assert len(layer["step"]) <= 40 and layer["raw_points"] == 300
        assert layer["step"][0] == 0 and layer["step"][-1] == 299
    assert 0.0 in ended["layers"]["layers"][1]["shift"]


def test_read_compare_order_and_duplicates(client, three_runs):
    """Runs come back in the order asked, each once (runs=b,a&runs=b)."""
    a, b, _ = three_runs
    res = client.get(f"/api/compare?runs={b},{a}&runs={b}")
    assert [r["run"]["id"] for r in res.json()["runs"]] == [b, a]


def test_read_compare_missing_runs_are_404_naming_them(client, three_runs):
    """Unknown ids: a 404 naming the field `runs` and listing the missing ids."""
    res = _compare(client, [three_runs[0], 987654, 987655])
    assert res.status_code == 404
    detail = res.json()["detail"][0]
    assert detail["field"] == "runs" and detail["input"] == [987654, 987655]
    assert "987654" in detail["msg"]


def test_document_the_404_body_compare_answers(client, three_runs):
    """The OpenAPI schema's 404 for /api/compare describes the body it sends (a field list, not
    the plain `detail` string of other 404s): schemathesis found the mismatch once."""
    from backend.api.errors import FieldErrorsPublic

    spec = client.get("/openapi.json").json()
    ref = spec["paths"]["/api/compare"]["get"]["responses"]["404"]["content"]["application/json"]
    assert ref["schema"]["$ref"].endswith("/FieldErrorsPublic")
    FieldErrorsPublic.model_validate(_compare(client, [987654]).json())


@pytest.mark.parametrize(
    "query, field",
    [
        ("", "runs"),
        ("runs=", "runs"),
        ("runs=1,abc", "runs"),
        ("runs=0", "runs"),
        ("runs=-3", "runs"),
        ("runs=99999999999", "runs"),
        (f"runs={','.join(str(i) for i in range(1, MAX_RUNS + 2))}", "runs"),
        ("runs=1&layer_keys=val_acc", "layer_keys"),
        ("runs=1&metric_keys=shift", "metric_keys"),
        ("runs=1&max_points=3", "max_points"),
        ("runs=1&max_points=many", "max_points"),
    ],
)
def test_read_compare_bad_input_is_422_naming_the_field(client, query, field):
    """Every malformed parameter is a 422 whose detail names it (never a 500)."""
    res = client.get(f"/api/compare?{query}")
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["field"] == field


def test_read_compare_ended_run_is_packed_and_pack_follows_run_row(client, session, three_runs):
    """An ended run's series are packed on first read; a late flush (new step on the run row)
    makes the pack stale, and the next answer (a new max_points: no in-memory cache) has the
    new point, read from the rows and packed again."""
    ended = three_runs[0]
    _compare(client, [ended], max_points=1000)
    packs = session.query(SeriesPack).filter_by(run_id=ended)
    assert {("layers", "shift"), ("metrics", "val_acc")} <= {(p.kind, p.key) for p in packs}
    assert not session.query(SeriesPack).filter_by(run_id=three_runs[1]).count()  # running
    add_points(session, ended, n_steps=1, n_layers=3, start=5000)
    session.get(Run, ended).step = 5000
    session.commit()
    body = _compare(client, [ended], max_points=999).json()["runs"][0]
    assert body["run"]["step"] == 5000 and body["metrics"]["step"][-1] == 5000
    assert [layer["step"][-1] for layer in body["layers"]["layers"]] == [5000] * 3
    session.expire_all()
    assert all("|5000|" in p.signature for p in packs)


def test_delete_run_removes_its_packs(client, session, three_runs):
    """Deleting a read (so packed) run leaves no pack behind, and compare then names it missing."""
    ended = three_runs[0]
    _compare(client, [ended])
    assert session.query(SeriesPack).filter_by(run_id=ended).count()
    assert client.delete(f"/api/runs/{ended}").status_code == 204
    assert not session.query(SeriesPack).filter_by(run_id=ended).count()
    assert _compare(client, [ended]).status_code == 404
