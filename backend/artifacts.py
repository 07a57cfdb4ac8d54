"""Where checkpoints, exports and uploaded datasets live, so that a worker on another host (no
shared disk with the API) can resume a run, read an uploaded dataset and hand back its export.

Keys are relative paths: `checkpoints/run-7.pt`, `exports/run-7/model.npz`, `uploads/<id>.npz`.

- `LocalStore` (the embedded default, BNLAB_ARTIFACTS_URL unset): keys are files under
  `settings.data_dir`, i.e. exactly the folders `bnlab serve` always used; putting a file that is
  already at its key's path costs nothing.
- `S3Store` (BNLAB_ARTIFACTS_URL=s3://bucket/prefix, BNLAB_S3_ENDPOINT_URL for MinIO or any
  S3-compatible server): objects through boto3. Every process keeps a local copy in its own
  data_dir (the same paths as LocalStore) and moves whole files: the engine reads and writes
  plain files, and the object store is only where they travel between hosts.

Writes are atomic on both sides: a local file is replaced with os.replace, an S3 object appears
whole when its upload completes, so a worker killed mid-upload leaves the previous checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from backend.settings import Settings, settings


class ArtifactStore(Protocol):
    """The operations the API and the worker need; keys are '/'-separated relative paths."""

    def local_path(self, key: str) -> Path: ...

    def put(self, key: str, src: Path | None = None) -> None:
        """Publish the file at src (default: local_path(key)) under key."""

    def fetch(self, key: str) -> Path | None:
        """local_path(key), brought from the store if needed; None when the key does not exist."""

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key starting with prefix, here and in the store."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"artifact key must be a relative path without '..': {key!r}")
    return key


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore:
    """Files under one root folder (the data dir): the single-host and shared-volume layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def local_path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, src: Path | None = None) -> None:
        dest = self.local_path(key)
        if src is not None and Path(src).resolve() != dest.resolve():
            _copy_atomic(Path(src), dest)

    def fetch(self, key: str) -> Path | None:
        path = self.local_path(key)
        return path if path.is_file() else None

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        _delete_local_prefix(self.root, prefix)

    def describe(self) -> str:
        return str(self.root)

    def check(self, timeout_s: float) -> str:
        """Health: "ok", or why the store cannot take files (a folder we cannot write to)."""
        del timeout_s  # a local folder answers at once
        if not self.root.is_dir():
            return f"error: {self.root} does not exist"
        if not os.access(self.root, os.W_OK | os.X_OK):
            return f"error: {self.root} is not writable"
        return "ok"


def _delete_local_prefix(root: Path, prefix: str) -> None:
    target = root / _check_key(prefix.rstrip("/"))
    if prefix.endswith("/"):
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


class S3Store:
    """An S3 bucket (AWS, MinIO, SeaweedFS, ...) with a local cache under `cache_root`."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        cache_root: Path,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str,
    ) -> None:
        try:  # the `s3` extra: the embedded default (a local folder) never needs it
            import boto3
            from botocore.config import Config
        except ModuleNotFoundError as exc:
            raise RuntimeError(
                "BNLAB_ARTIFACTS_URL names an S3 bucket, which needs boto3: pip install 'bnlab[s3]'"
            ) from exc

        self.bucket, self.prefix, self.cache_root = bucket, prefix.strip("/"), Path(cache_root)
        # Path-style addressing: MinIO and SeaweedFS serve buckets under the path, not a
        # subdomain. Retries in "standard" mode ride out a restarting object store.
        self._where = {
            "endpoint_url": endpoint_url,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "region_name": region,
        }
        self.client = boto3.client(
            "s3",
            **self._where,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def _name(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def local_path(self, key: str) -> Path:
        return self.cache_root / _check_key(key)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (the API does this at start-up)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, src: Path | None = None) -> None:
        self.client.upload_file(str(src or self.local_path(key)), self.bucket, self._name(key))

    def fetch(self, key: str) -> Path | None:
        from botocore.exceptions import ClientError

        dest = self.local_path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._name(key), tmp)
            os.replace(tmp, dest)
        except ClientError as exc:
            Path(tmp).unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def check(self, timeout_s: float) -> str:
        """Health: "ok" when the bucket answers within timeout_s (one try: health must not hang
        on the store client's retries), else "error: <why>"."""
        import boto3
        from botocore.config import Config

        quick = boto3.client(
            "s3",
            **self._where,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
            ),
        )
        try:
            quick.head_bucket(Bucket=self.bucket)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - health reports failures instead of raising
            return f"error: {type(exc).__name__}"

    def delete_prefix(self, prefix: str) -> None:
        name = self._name(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=name
        )
        for page in pages:
            objects = [
                {"Key": o["Key"]}
                for o in page.get("Contents", [])
                if prefix.endswith("/") or o["Key"] == name
            ]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
        _delete_local_prefix(self.cache_root, prefix)


def make_store(s: Settings = settings) -> LocalStore | S3Store:
    """The store BNLAB_ARTIFACTS_URL names (unset: the data dir)."""
    url = s.artifacts_url
    if not url:
        return LocalStore(s.data_dir)
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"BNLAB_ARTIFACTS_URL must be s3://bucket[/prefix] or unset, got {url!r}")
    return S3Store(
        bucket=parsed.netloc,
        prefix=parsed.path,
        cache_root=s.data_dir,
        endpoint_url=s.s3_endpoint_url,
        access_key=s.s3_access_key,
        secret_key=s.s3_secret_key,
        region=s.s3_region,
    )


_stores: dict[tuple, LocalStore | S3Store] = {}


def get_store() -> LocalStore | S3Store:
    """The store of the current settings (one boto3 client per process and configuration:
    tests and `serve --data-dir` change the settings after import)."""
    s = settings
    key = (
        str(s.data_dir),
        s.artifacts_url,
        s.s3_endpoint_url,
        s.s3_access_key,
        s.s3_secret_key,
        s.s3_region,
    )
    if key not in _stores:
        _stores[key] = make_store(s)
    return _stores[key]


def checkpoint_key(run_id: int) -> str:
    return f"checkpoints/run-{run_id}.pt"


def export_key(run_id: int, fmt: str) -> str:
    return f"exports/run-{run_id}/model.{fmt}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}.npz"
