"""Object storage: buckets as folders on local disk, or any S3 API (AWS S3, SeaweedFS, MinIO).

Both implement `hub_pipelines.core.ports.ObjectStorage`: `bucket(name)` hands out an `ObjectStore`
bound to one bucket. `create_bucket(name)` is idempotent on both, for bootstrap scripts and tests.
A missing object raises `ObjectNotFound`, a missing bucket `BucketNotFound`, a key, prefix or
bucket name outside `hub_pipelines.resources.object_keys`'s rule `InvalidObjectName`, on every call.

The S3 resource here holds settings only; the S3 calls live in `object_storage_s3`, which imports
boto3, and the client comes from dagster-aws, whose package imports its components (about 2 s).
Both load when a process first uses a bucket, so defining the code location, and every run that
touches no bucket, pays for neither.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.resources.object_keys import InvalidObjectName
from hub_pipelines.resources.object_storage_local import LocalObjectStorage, LocalObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from hub_pipelines.resources.object_storage_s3 import S3ObjectStore

__all__ = [
    "SSE_S3",
    "InvalidObjectName",
    "LocalObjectStorage",
    "LocalObjectStore",
    "ObjectNotEncrypted",
    "S3ObjectStorage",
]

SSE_S3 = "AES256"

# One lock for all instances: a lock in a PrivateAttr would stop Dagster from deep-copying the resource.
_CLIENT_CREATION = threading.Lock()


class ObjectNotEncrypted(RuntimeError):
    """The server stored a written object without the server-side encryption the write asked for."""


class S3ObjectStorage(dg.ConfigurableResource):
    """Any S3 API, with a client from dagster-aws's `S3Resource` (set `endpoint_url` for SeaweedFS or MinIO).

    Every write (put, multipart upload, copy) asks for server-side encryption
    (`server_side_encryption`, SSE-S3 by default) and reads it back from a HEAD of the new object: an
    object the server did not encrypt is deleted and the write raises `ObjectNotEncrypted`. Set it to
    None only for a server that cannot encrypt: SeaweedFS rejects SSE-S3 puts with an InternalError
    unless it has a key-encryption key (`WEED_S3_SSE_KEK` or `s3.sse.kek`).
    File objects are uploaded in parts of `multipart_chunk_mb` (5 at least, S3's smallest part)
    once larger than `multipart_threshold_mb`; their etag is then S3's multipart etag, not the MD5
    of the bytes. Copies use one `copy_object` call, so an object over 5 GB cannot be copied.

    SeaweedFS (4.48) lists keys in path-segment order, as a folder walk would, not in S3's byte
    order. The two agree unless sibling names differ at a character below '/' ('-' or '.', say:
    S3 puts "a-b" before "a/c", SeaweedFS after). Its `StartAfter` also skips the keys under a key
    that is itself a prefix of other keys ("x" and "x/y"). Key layouts that paginate by
    `start_after` should avoid both; the local store refuses the second outright.
    """

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    server_side_encryption: str | None = SSE_S3
    multipart_threshold_mb: int = 16
    multipart_chunk_mb: int = 16

    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> S3Client:
        with _CLIENT_CREATION:
            if self._client is None:
                from dagster_aws.s3 import S3Resource

                self._client = S3Resource(
                    endpoint_url=self.endpoint_url,
                    region_name=self.region_name,
                    aws_access_key_id=self.aws_access_key_id,
                    aws_secret_access_key=self.aws_secret_access_key,
                ).get_client()
            return self._client

    def create_bucket(self, name: str) -> None:
        from hub_pipelines.resources.object_storage_s3 import create_bucket

        create_bucket(self.client, name, self.region_name)

    def bucket(self, name: str) -> S3ObjectStore:
        from hub_pipelines.resources.object_storage_s3 import S3ObjectStore

        return S3ObjectStore(self, name)
