"""The artifact store, local and S3 (a real SeaweedFS S3 gateway on a loopback port)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.artifacts import LocalStore, S3Store, make_store
from backend.settings import Settings
from tests.utils.s3server import SeaweedS3


@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3]:
    server = SeaweedS3()
    server.start()
    yield server
    server.stop()


def fields(env: dict[str, str]) -> dict[str, str]:
    """BNLAB_S3_ENDPOINT_URL=... -> s3_endpoint_url=... (Settings takes field names)."""
    return {k.removeprefix("BNLAB_").lower(): v for k, v in env.items()}


def s3_store(s3: SeaweedS3, cache: Path, prefix: str = "p") -> S3Store:
    store = make_store(Settings(data_dir=cache, **fields(s3.env(prefix))))
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["local", "s3"])
def two_hosts(request, tmp_path) -> tuple:
    """Two stores that see the same artifacts through different local folders (two hosts).
    Local: both on one folder (the shared-volume layout). S3: two caches, one bucket."""
    if request.param == "local":
        shared = tmp_path / "shared"
        return LocalStore(shared), LocalStore(shared)
    s3 = request.getfixturevalue("s3")
    return s3_store(s3, tmp_path / "host-a"), s3_store(s3, tmp_path / "host-b")


def test_hand_a_file_to_another_host(two_hosts, tmp_path) -> None:
    """What host A puts under a key, host B fetches byte for byte into its own folder."""
    a, b = two_hosts
    key = f"checkpoints/run-{os.getpid()}.pt"
    src = a.local_path(key)
    src.parent.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(3 * 2**20 + 17)  # several multipart chunks for boto3 (8 MB default: 1)
    src.write_bytes(payload)
    a.put(key)
    assert b.exists(key)
    got = b.fetch(key)
    assert got == b.local_path(key) and got.read_bytes() == payload


def test_put_from_elsewhere_and_replace(two_hosts, tmp_path) -> None:
    """put(key, src) publishes a file from any path; a second put replaces the first."""
    a, b = two_hosts
    key = "exports/run-3/model.npz"
    for content in (b"first", b"second version"):
        src = tmp_path / "x.bin"
        src.write_bytes(content)
        a.put(key, src)
        assert b.fetch(key).read_bytes() == content


def test_fetch_missing_key_gives_none(two_hosts) -> None:
    a, b = two_hosts
    assert b.fetch("uploads/nope.npz") is None
    assert not a.exists("uploads/nope.npz")
    assert not b.local_path("uploads/nope.npz").exists()  # no empty file left behind


def test_delete_prefix_removes_only_that_prefix(two_hosts, tmp_path) -> None:
    a, b = two_hosts
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for key in ("exports/run-1/model.npz", "exports/run-1/model.onnx", "exports/run-10/model.npz"):
        a.put(key, src)
    b.fetch("exports/run-1/model.npz")
    a.delete_prefix("exports/run-1/")
    assert not b.exists("exports/run-1/model.npz") and not b.exists("exports/run-1/model.onnx")
    assert b.exists("exports/run-10/model.npz")
    a.delete_prefix("exports/run-10/model.npz")
    assert not b.exists("exports/run-10/model.npz")


def test_prefixes_keep_deployments_apart(s3, tmp_path) -> None:
    """Two BNLAB_ARTIFACTS_URL prefixes in one bucket never see each other's keys."""
    one, two = s3_store(s3, tmp_path / "1", "one"), s3_store(s3, tmp_path / "2", "two")
    src = tmp_path / "f"
    src.write_bytes(b"x")
    one.put("uploads/u.npz", src)
    assert one.exists("uploads/u.npz") and not two.exists("uploads/u.npz")
    names = [
        o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="one/")["Contents"]
    ]
    assert "one/uploads/u.npz" in names


def test_bucket_is_created_when_missing(s3, tmp_path) -> None:
    store = S3Store(
        bucket=f"fresh-{os.getpid()}",
        prefix="",
        cache_root=tmp_path,
        endpoint_url=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region="us-east-1",
    )
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent: every API replica calls it at start
    src = tmp_path / "f"
    src.write_bytes(b"ok")
    store.put("a/b", src)
    assert store.exists("a/b")


def test_wrong_secret_is_an_error_not_a_missing_key(s3, tmp_path) -> None:
    """Bad credentials must raise: treating them as 'no checkpoint' would restart runs at 0."""
    env = s3.env("p") | {"BNLAB_S3_SECRET_KEY": "wrong"}
    store = make_store(Settings(data_dir=tmp_path, **fields(env)))
    with pytest.raises(Exception, match="(?i)signature|denied|forbidden|invalid"):
        store.fetch("checkpoints/run-1.pt")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/./b", ""])
def test_reject_keys_outside_the_store(key, tmp_path) -> None:
    with pytest.raises(ValueError, match="artifact key"):
        LocalStore(tmp_path).local_path(key)


def test_reject_a_url_that_is_not_s3(tmp_path) -> None:
    with pytest.raises(ValueError, match="BNLAB_ARTIFACTS_URL"):
        make_store(Settings(data_dir=tmp_path, artifacts_url="ftp://x/y"))


def test_default_is_the_data_dir(tmp_path) -> None:
    """Unset: the keys are the data dir's own folders (`bnlab serve` layout unchanged)."""
    s = Settings(data_dir=tmp_path)
    store = make_store(s)
    assert isinstance(store, LocalStore)
    assert store.local_path("checkpoints/run-2.pt") == s.checkpoints_dir / "run-2.pt"
    assert store.local_path("exports/run-2/model.npz") == s.exports_dir / "run-2" / "model.npz"
    assert store.local_path("uploads/u.npz") == s.uploads_dir / "u.npz"
