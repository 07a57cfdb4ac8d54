"""GET /api/presets: every preset loads, validates, and can be submitted as it is."""

from __future__ import annotations

import json

import pytest

from backend.presets import PRESETS_DIR, load_preset, load_presets
from tests.utils.datasets import write_cifar, write_cifar100


@pytest.fixture
def cifar_files(client):
    """The li_* presets' CPU variants read synthetic CIFAR folders under the datasets root
    (docs/studies.md: `bnlab make-cifar`); tiny ones in the real layouts stand in here."""
    from backend.settings import settings

    write_cifar(settings.datasets_dir / "synthetic-cifar10", n_per_batch=8)
    write_cifar100(settings.datasets_dir / "synthetic-cifar100")


def test_read_presets_lists_every_file(client):
    """Every backend/presets/*.json is served, with its question and payload."""
    body = client.get("/api/presets").json()
    assert {p["id"] for p in body} == {p.stem for p in PRESETS_DIR.glob("*.json")}
    assert all(p["question"] and p["expected"] and p["look_at"] for p in body)


def test_read_preset_by_id(client):
    """GET /api/presets/variance_shift is that preset; an unknown id is 404."""
    assert client.get("/api/presets/variance_shift").json()["kind"] == "sweep"
    assert client.get("/api/presets/nope").status_code == 404


def test_submit_every_preset_is_accepted(client, cifar_files):
    """Each preset's payload is accepted by the endpoint of its kind (201)."""
    for preset in client.get("/api/presets").json():
        if preset["kind"] == "run":
            res = client.post("/api/runs", json=preset["config"])
        else:
            res = client.post("/api/sweeps", json=preset["sweep"])
        assert res.status_code == 201, (preset["id"], res.text)


def test_variance_shift_compares_block_dropout_with_head_dropout(client):
    """The variance-shift preset has runs with dropout before BN and runs with head dropout only."""
    runs = client.post(
        "/api/sweeps", json=client.get("/api/presets/variance_shift").json()["sweep"]
    ).json()["runs"]
    blocks = [r["config"]["model"]["block"] for r in runs]
    before_bn = [b for b in blocks if "dropout" in b and b.index("dropout") < b.index("batchnorm")]
    head_only = [
        r
        for r in runs
        if "dropout" not in r["config"]["model"]["block"] and r["config"]["model"]["head_dropout"]
    ]
    assert before_bn and head_only


def test_load_preset_rejects_mismatched_id(tmp_path):
    """A preset whose id differs from its file name fails loudly."""
    data = json.loads((PRESETS_DIR / "variance_shift.json").read_text())
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    try:
        load_preset(path)
    except ValueError as exc:
        assert "file name" in str(exc)
    else:
        raise AssertionError("a mismatched id was accepted")


def test_load_presets_rejects_invalid_cell(tmp_path):
    """A sweep preset with a grid value the schema refuses does not load."""
    data = json.loads((PRESETS_DIR / "variance_shift.json").read_text())
    data["id"] = "bad"
    data["sweep"]["grid"]["model.dropout.rate"] = [2.0]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    try:
        load_presets.__wrapped__(tmp_path)
    except ValueError as exc:
        assert "dropout.rate" in str(exc)
    else:
        raise AssertionError("an invalid grid cell was accepted")


def test_tag_runs_with_their_preset(client):
    """Every run a preset makes carries `preset:<id>` (its full variant too), so the compare
    view can find the preset's question: checked on the runs the API creates (on the body
    itself for a preset this server refuses, e.g. one whose dataset files are not here)."""
    for preset in client.get("/api/presets").json():
        tag = f"preset:{preset['id']}"
        if preset["kind"] == "run":
            body, full = preset["config"], preset["full"]
            res = client.post("/api/runs", json=body)
            runs = [res.json()] if res.status_code == 201 else [body]
        else:
            body, full = preset["sweep"], (preset["full"] or {}).get("base")
            res = client.post("/api/sweeps", json=body)
            runs = res.json()["runs"] if res.status_code == 201 else [body["base"]]
        assert runs and all(tag in r["tags"] for r in runs), (preset["id"], runs[0]["tags"])
        assert full is None or tag in full["tags"], preset["id"]
