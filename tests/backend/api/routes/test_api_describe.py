"""POST /api/describe and the residual-net fields of POST /api/runs (422s naming the field)."""

from __future__ import annotations

import pytest

from tests.utils.runs import make_config

CIFAR = {"name": "cifar10", "path": "cifar10"}


def _model(**fields):
    return {"dropout": {"rate": 0.2}, **fields}


@pytest.mark.parametrize(
    "model,published,bns",
    [
        # preact basic: 2 BNs in each of 3n units + the head's = 6n + 1 = depth - 1
        ({"arch": "resnet", "depth": 110}, 1.73e6, 109),
        # WRN: 2 per unit, n = (depth - 4) / 6 per stage, + the head's = depth - 3
        ({"arch": "wrn", "depth": 28, "widen": 10}, 36.48e6, 25),
        # DenseNet-BC: 2 per unit (3n units), 2 transitions, the head's: 6n + 3 = depth - 1
        ({"arch": "densenet", "depth": 100, "growth": 12}, 0.769e6, 99),
    ],
)
def test_describe_published_nets(client, model, published, bns):
    """The parameter count is within 1 % of the published one and the BN list has the count
    the architecture's structure gives, each BN with its stage and unit."""
    res = client.post("/api/describe", json=make_config(dataset=CIFAR, model=_model(**model)))
    assert res.status_code == 200, res.text
    body = res.json()
    assert abs(body["params"] / published - 1) < 0.01
    assert len(body["bn_layers"]) == bns
    assert [b["index"] for b in body["bn_layers"]] == list(range(bns))
    units = [b for b in body["bn_layers"] if b["place"] == "unit"]
    assert all(b["name"].startswith(f"stage{b['stage']}.unit{b['unit']}.") for b in units)
    assert body["bn_layers"][-1]["name"] == "head.bn"


def test_describe_places_dropout_and_mlp_unchanged(client):
    """WRN dropout between the convs: one per unit, right before conv2; an mlp config
    describes its blocks under the names the probe reports."""
    body = client.post(
        "/api/describe",
        json=make_config(
            dataset=CIFAR, model=_model(arch="wrn", depth=16, widen=2, dropout_at="before_conv")
        ),
    ).json()
    assert [d["before"] for d in body["dropouts"]] == [
        f"stage{s}.unit{u}.conv2" for s in (1, 2, 3) for u in (1, 2)
    ]
    assert not any(b["dropout_before"] for b in body["bn_layers"])
    mlp = client.post("/api/describe", json=make_config()).json()
    assert [b["name"] for b in mlp["bn_layers"]] == ["blocks.0.bn", "blocks.1.bn"]
    assert mlp["memory"]["total_bytes"] > 0 and mlp["time"]["assumes"]


BAD = [
    ({"arch": "resnet", "depth": 21}, "model.depth"),
    ({"arch": "resnet", "depth": 26, "bottleneck": True}, "model.depth"),  # 6n+2, not 9n+2
    ({"arch": "wrn", "depth": 20}, "model.depth"),
    ({"arch": "densenet", "depth": 41}, "model.depth"),
    ({"arch": "densenet", "growth": 0}, "model.growth"),
    ({"arch": "wrn", "widen": 0}, "model.widen"),
    ({"arch": "mlp", "dropout_at": "before_bn"}, "model.dropout_at"),
    ({"arch": "cnn", "block": ["conv"], "dropout_at": "head"}, "model.dropout_at"),
    ({"arch": "wrn", "dropout_at": "inside"}, "model.dropout_at"),
    ({"arch": "wrn", "bottleneck": True}, "model.bottleneck"),
    ({"arch": "resnet", "widen": 4}, "model.widen"),
    ({"arch": "resnet", "head_dropout": 0.3}, "model.head_dropout"),
    ({"arch": "mlp", "depth": 20}, "model.depth"),
]


@pytest.mark.parametrize("model,field", BAD, ids=[f for _, f in BAD])
@pytest.mark.parametrize("path", ["/api/runs", "/api/describe"])
def test_refuse_invalid_combinations_naming_the_field(client, path, model, field):
    res = client.post(path, json=make_config(model=_model(**model)))
    assert res.status_code == 422, res.text
    assert [d["field"] for d in res.json()["detail"]] == [field]


def test_residual_net_over_param_cap_names_depth(client, monkeypatch):
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_params", 100_000)
    ok = make_config(model=_model(arch="resnet", depth=8))  # ~78k parameters
    assert client.post("/api/runs", json=ok).status_code == 201
    res = client.post("/api/runs", json=make_config(model=_model(arch="resnet", depth=20)))
    assert res.status_code == 422
    assert res.json()["detail"][0]["field"] == "model.depth"


def test_run_serves_stage_and_unit_of_each_layer(client, session):
    """A run's layer_places (parsed from the stored layer names) give each BN the stage and
    unit the network's spec gives it, so a view can group 50-300 layers by stage."""
    from backend.db.models import Run

    cfg = make_config(model=_model(arch="densenet", depth=16, growth=4))
    spec = client.post("/api/describe", json=cfg).json()
    run_id = client.post("/api/runs", json=cfg).json()["id"]
    run = session.get(Run, run_id)
    run.layer_names = [b["name"] for b in spec["bn_layers"]]  # what the worker records
    session.commit()
    places = client.get(f"/api/runs/{run_id}").json()["layer_places"]
    assert [(p["index"], p["stage"], p["unit"], p["place"]) for p in places] == [
        (b["index"], b["stage"], b["unit"], b["place"]) for b in spec["bn_layers"]
    ]
    assert {p["place"] for p in places} == {"unit", "transition", "head"}


def test_describe_sizes_an_upload_from_its_stored_shape(client):
    """An upload's model is sized from the stored feature and class counts; an unknown upload
    id is a 422 naming dataset.upload_id."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, X=np.random.default_rng(0).normal(size=(40, 5)), y=np.arange(40) % 3)
    up = client.post("/api/datasets", files={"file": ("d.npz", buf.getvalue(), "x/y")}).json()
    cfg = make_config(dataset={"name": "upload", "upload_id": up["upload_id"]})
    d = client.post("/api/describe", json=cfg).json()
    assert d["input_shape"] == [1, 1, 5] and d["classes"] == 3
    w = cfg["model"]["widths"]  # linear -> dropout -> BN -> act blocks, BN on each width
    fan_in = [5, *w[:-1]]
    want = sum(i * o + o + 2 * o for i, o in zip(fan_in, w, strict=True)) + w[-1] * 3 + 3
    assert d["params"] == want
    bad = make_config(dataset={"name": "upload", "upload_id": "nope"})
    res = client.post("/api/describe", json=bad)
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "dataset.upload_id"
