"""GET /api/runs/{id}/export?format=npz|onnx: the worker's export files, or a clear 404."""

from __future__ import annotations

from tests.utils.runs import create_random_run


def _export(data_dir, run_id: int, name: str, payload: bytes) -> None:
    folder = data_dir / "exports" / f"run-{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(payload)


def test_read_export_serves_npz(client, session, data_dir):
    """A succeeded run's model.npz is served as a download named after the run."""
    run = create_random_run(session, status="succeeded")
    _export(data_dir, run.id, "model.npz", b"NPZDATA")
    res = client.get(f"/api/runs/{run.id}/export")
    assert res.status_code == 200 and res.content == b"NPZDATA"
    assert f"bnlab-run-{run.id}.npz" in res.headers["content-disposition"]


def test_read_export_serves_onnx(client, session, data_dir):
    """format=onnx serves model.onnx."""
    run = create_random_run(session, status="succeeded")
    _export(data_dir, run.id, "model.onnx", b"ONNX")
    assert client.get(f"/api/runs/{run.id}/export?format=onnx").content == b"ONNX"


def test_read_export_unfinished_run_is_404_saying_why(client, session):
    """A running run has no export: 404 whose message says it is running."""
    run = create_random_run(session, status="running")
    res = client.get(f"/api/runs/{run.id}/export")
    assert res.status_code == 404 and "running" in res.json()["detail"]


def test_read_export_missing_onnx_is_404_saying_why(client, session, data_dir):
    """Without model.onnx (onnx not installed on the worker) the 404 says so."""
    run = create_random_run(session, status="succeeded")
    _export(data_dir, run.id, "model.npz", b"x")
    res = client.get(f"/api/runs/{run.id}/export?format=onnx")
    assert res.status_code == 404 and "onnx" in res.json()["detail"].lower()


def test_read_export_unknown_format_is_422(client, session):
    """Another format is a 422 naming `format`."""
    run = create_random_run(session, status="succeeded")
    res = client.get(f"/api/runs/{run.id}/export?format=pt")
    assert res.status_code == 422 and res.json()["detail"][0]["field"] == "format"


def test_list_exports_names_the_files_present(client, session, data_dir):
    """GET /exports lists exactly the formats whose file exists (the dashboard offers those)."""
    run = create_random_run(session, status="succeeded")
    assert client.get(f"/api/runs/{run.id}/exports").json() == {"formats": []}
    _export(data_dir, run.id, "model.npz", b"x")
    assert client.get(f"/api/runs/{run.id}/exports").json() == {"formats": ["npz"]}
    _export(data_dir, run.id, "model.onnx", b"y")
    assert client.get(f"/api/runs/{run.id}/exports").json() == {"formats": ["npz", "onnx"]}
    assert client.get("/api/runs/999999/exports").status_code == 404
