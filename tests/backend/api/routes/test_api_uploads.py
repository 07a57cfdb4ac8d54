"""POST /api/datasets: .npz/.csv validated, normalised, stored atomically; bad files are 4xx."""

from __future__ import annotations

import io

import numpy as np
import pytest

from backend.db.models import Upload
from tests.utils.runs import make_config


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good(n: int = 40, features: int = 5, classes: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {"X": rng.normal(size=(n, features)), "y": np.arange(n) % classes}


def _post(client, data: bytes, name: str = "d.npz"):
    return client.post("/api/datasets", files={"file": (name, data, "application/octet-stream")})


def _leftovers(data_dir):
    folder = data_dir / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_create_upload_npz_stores_normalised_file(client, session, data_dir):
    """A valid .npz answers its shape and is stored as X float32 / y int64 under uploads_dir."""
    res = _post(client, _npz(**_good()))
    assert res.status_code == 201, res.text
    body = res.json()
    assert (body["n_rows"], body["n_features"], body["n_classes"]) == (40, 5, 3)
    with np.load(data_dir / "uploads" / f"{body['upload_id']}.npz") as stored:
        assert stored["X"].dtype == np.float32 and stored["y"].dtype == np.int64
        assert stored["X"].shape == (40, 5)
    assert session.get(Upload, body["upload_id"]) is not None


def test_create_upload_csv_uses_label_column(client, data_dir):
    """A .csv's `label` column is the class wherever it stands; the rest are features."""
    rows = "\n".join(f"{i % 2},{i}.5,{i * 2}" for i in range(20))
    res = _post(client, f"label,a,b\n{rows}\n".encode(), "d.csv")
    assert res.status_code == 201, res.text
    body = res.json()
    assert (body["n_rows"], body["n_features"], body["n_classes"]) == (20, 2, 2)
    with np.load(data_dir / "uploads" / f"{body['upload_id']}.npz") as stored:
        assert stored["X"][3].tolist() == [3.5, 6.0] and stored["y"][3] == 1


def test_create_upload_csv_last_column_is_label(client):
    """Without a `label` column, the last column is the class."""
    rows = "\n".join(f"{i}.0,{i % 4}" for i in range(20))
    assert _post(client, f"x,cls\n{rows}\n".encode(), "d.csv").json()["n_classes"] == 4


def test_create_upload_usable_in_run(client):
    """A run on the uploaded dataset is accepted (upload id known, model sized from it)."""
    upload_id = _post(client, _npz(**_good())).json()["upload_id"]
    # 40 rows: 26 training samples after the test and validation splits, so batches of 8
    res = client.post(
        "/api/runs",
        json=make_config(dataset={"name": "upload", "upload_id": upload_id}, train__batch_size=8),
    )
    assert res.status_code == 201, res.text


BAD_FILES = {
    "nan": (lambda: _npz(X=np.full((20, 2), np.nan), y=np.arange(20) % 2), "NaN"),
    "inf": (lambda: _npz(X=np.full((20, 2), np.inf), y=np.arange(20) % 2), "infinite"),
    "float_overflow": (lambda: _npz(X=np.full((20, 2), 1e300), y=np.arange(20) % 2), "float32"),
    "string_x": (lambda: _npz(X=np.array([["a", "b"]] * 20), y=np.arange(20) % 2), "numeric"),
    "float_y": (lambda: _npz(X=np.zeros((20, 2)), y=np.arange(20) / 2), "integer"),
    "negative_label": (
        lambda: _npz(X=np.zeros((20, 2)), y=np.arange(20) % 2 - 1),
        "0..n_classes-1",
    ),
    "gap_in_labels": (lambda: _npz(X=np.zeros((20, 2)), y=(np.arange(20) % 2) * 3), "contiguous"),
    "one_class": (lambda: _npz(X=np.zeros((20, 2)), y=np.zeros(20, dtype=int)), "classes"),
    "length_mismatch": (lambda: _npz(X=np.zeros((20, 2)), y=np.arange(19) % 2), "shape"),
    "missing_y": (lambda: _npz(X=np.zeros((20, 2))), "'y'"),
    "too_few_rows": (lambda: _npz(X=np.zeros((3, 2)), y=np.arange(3) % 2), "rows"),
    "object_array": (
        lambda: _npz(X=np.array([{"a": 1}] * 20, dtype=object), y=np.arange(20) % 2),
        "npz",
    ),
    "truncated": (lambda: _npz(**_good())[:200], "truncated or malformed"),
    "garbage": (lambda: b"not a zip at all", "npz"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_create_upload_refuses_bad_npz_naming_problem(client, data_dir, session, case):
    """Each malformed .npz is a 4xx whose message names the problem; nothing is left behind."""
    make, words = BAD_FILES[case]
    before, files = session.query(Upload).count(), _leftovers(data_dir)
    res = _post(client, make())
    assert 400 <= res.status_code < 500, res.text
    assert words.lower() in res.json()["message"].lower(), res.json()
    assert res.json()["detail"][0]["field"] == "file"
    assert _leftovers(data_dir) == files
    assert session.query(Upload).count() == before


@pytest.mark.parametrize(
    "text,words",
    [
        ("a,label\n1,0\n2\n", "malformed"),  # a short (truncated) row
        ("a,label\n1,0\nx,1\n", "malformed"),  # a non-number
        ("a,label\n" + "1,0.5\n" * 20, "whole numbers"),  # fractional label
        ("a,label\n", "no data rows"),
        ("label\n" + "1\n" * 20, "header"),  # no feature column
    ],
)
def test_create_upload_refuses_bad_csv(client, text, words):
    """Malformed CSVs are 4xx naming the problem."""
    res = _post(client, text.encode(), "d.csv")
    assert 400 <= res.status_code < 500
    assert words in res.json()["message"], res.json()


def test_create_upload_refuses_unknown_type(client):
    """Only .npz and .csv are accepted."""
    res = _post(client, b"abc", "d.pkl")
    assert res.status_code == 422 and ".npz or .csv" in res.json()["message"]


def test_create_upload_over_size_cap_is_413(client, monkeypatch, data_dir, session):
    """A file past BNLAB_MAX_UPLOAD_MB is refused with 413 and nothing is stored."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_upload_mb", 1)
    before, files = session.query(Upload).count(), _leftovers(data_dir)
    big = _npz(X=np.random.default_rng(0).normal(size=(40_000, 8)), y=np.arange(40_000) % 2)
    assert len(big) > 2**20 + 64 * 1024
    res = _post(client, big)
    assert res.status_code == 413 and "BNLAB_MAX_UPLOAD_MB" in res.json()["detail"]
    assert session.query(Upload).count() == before
    assert _leftovers(data_dir) == files


def test_store_upload_over_cap_stops_reading_early(session, monkeypatch):
    """crud.store_upload itself stops copying past the cap (no full read of a huge stream)."""
    from backend.crud.uploads import store_upload
    from backend.settings import settings
    from bnlab.core.errors import TooLarge

    monkeypatch.setattr(settings, "max_upload_mb", 1)

    class Endless(io.RawIOBase):
        served = 0

        def read(self, n=-1):
            self.served += n
            return b"\0" * n

    stream = Endless()
    with pytest.raises(TooLarge):
        store_upload(session=session, filename="x.npz", stream=stream)
    assert stream.served <= 3 * 2**20


def test_create_upload_db_failure_leaves_no_file(client, monkeypatch, data_dir):
    """If the Upload row cannot be stored, the normalised file is removed again."""
    from sqlalchemy.orm import Session

    def broken_commit(self):
        raise RuntimeError("database went away")

    files = _leftovers(data_dir)
    monkeypatch.setattr(Session, "commit", broken_commit)
    with pytest.raises(RuntimeError):
        _post(client, _npz(**_good()))
    assert _leftovers(data_dir) == files


def test_create_upload_chunked_over_cap_is_413(client, monkeypatch):
    """Without a Content-Length (chunked), the body is counted as it streams and cut at the cap."""
    from backend.settings import settings

    monkeypatch.setattr(settings, "max_upload_mb", 1)

    def body():
        head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'
        yield head
        for _ in range(64):  # 4 MB in 64 KB pieces
            yield b"\0" * 65536

    res = client.post(
        "/api/datasets", content=body(), headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    assert res.status_code == 413
    assert "Content-Length" not in res.request.headers
