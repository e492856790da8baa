"""Object storage: buckets as folders on local disk, or any S3 API (AWS S3, SeaweedFS, MinIO).

Both implement `hub_pipelines.core.ports.ObjectStorage`: `bucket(name)` hands out an `ObjectStore`
bound to one bucket. `create_bucket(name)` is idempotent on both, for bootstrap scripts and tests.
A missing object raises `ObjectNotFound`, a missing bucket `BucketNotFound`, a key, prefix or
bucket name outside `hub_pipelines.resources.object_keys`'s rule `InvalidObjectName`, on every call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import UTC
from typing import IO, TYPE_CHECKING, Any

import dagster as dg
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from hub_pipelines.core.ports import BucketNotFound, ObjectInfo, ObjectNotFound
from hub_pipelines.resources.object_keys import InvalidObjectName, check_key_prefix, check_object_key
from hub_pipelines.resources.object_storage_local import (
    LocalObjectStorage,
    LocalObjectStore,
    normalise_metadata,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "SSE_S3",
    "InvalidObjectName",
    "LocalObjectStorage",
    "LocalObjectStore",
    "ObjectNotEncrypted",
    "S3ObjectStorage",
    "S3ObjectStore",
]

SSE_S3 = "AES256"

# One lock for all instances: a lock in a PrivateAttr would stop Dagster from deep-copying the resource.
_CLIENT_CREATION = threading.Lock()


class ObjectNotEncrypted(RuntimeError):
    """The server stored a written object without the server-side encryption the write asked for."""


class S3ObjectStorage(dg.ConfigurableResource):
    """Any S3 API through dagster-aws's `S3Resource` (set its `endpoint_url` for SeaweedFS or MinIO).

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

    s3: S3Resource
    server_side_encryption: str | None = SSE_S3
    multipart_threshold_mb: int = 16
    multipart_chunk_mb: int = 16

    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> S3Client:
        with _CLIENT_CREATION:
            if self._client is None:
                self._client = self.s3.get_client()
            return self._client

    def create_bucket(self, name: str) -> None:
        request: dict[str, Any] = {"Bucket": name}
        region = self.s3.region_name
        if region and region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**request)
        except ClientError as error:
            if _error_code(error) != "BucketAlreadyOwnedByYou":
                raise

    def bucket(self, name: str) -> S3ObjectStore:
        return S3ObjectStore(self, name)

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold_mb << 20,
            multipart_chunksize=self.multipart_chunk_mb << 20,
        )


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3ObjectStore:
    """One bucket of an `S3ObjectStorage`."""

    def __init__(self, storage: S3ObjectStorage, bucket: str) -> None:
        self.bucket = bucket
        self._storage = storage

    @property
    def _client(self) -> S3Client:
        return self._storage.client

    def put(
        self,
        key: str,
        data: bytes | IO[bytes],
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_object_key(self.bucket, key)
        extra: dict[str, Any] = {"Metadata": normalise_metadata(metadata)}
        if self._storage.server_side_encryption:
            extra["ServerSideEncryption"] = self._storage.server_side_encryption
        if content_type is not None:
            extra["ContentType"] = content_type
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), **extra)
            else:
                self._client.upload_fileobj(
                    data, self.bucket, key, ExtraArgs=extra, Config=self._storage.transfer_config()
                )
        except ClientError as error:
            raise self._translate(error, key) from error
        return self._head_after_write(key)

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        check_object_key(self.bucket, key)
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            raise self._translate(error, key) from error

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def head(self, key: str) -> ObjectInfo | None:
        check_object_key(self.bucket, key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            # HEAD responses carry no error body: a missing key and a missing bucket are both a bare 404.
            if _error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=response["ETag"].strip('"'),
            last_modified=response["LastModified"].astimezone(UTC),
            content_type=response.get("ContentType"),
            cache_control=response.get("CacheControl"),
            server_side_encryption=response.get("ServerSideEncryption"),
            metadata=dict(response.get("Metadata", {})),
        )

    def list_after(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[ObjectInfo]:
        check_key_prefix(self.bucket, prefix)
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after is not None:
            request["StartAfter"] = start_after
        infos: list[ObjectInfo] = []
        while len(infos) < limit:
            request["MaxKeys"] = min(limit - len(infos), 1000)
            try:
                page = self._client.list_objects_v2(**request)
            except ClientError as error:
                raise self._translate(error, prefix) from error
            infos.extend(
                ObjectInfo(
                    key=item["Key"],
                    size=item["Size"],
                    etag=item["ETag"].strip('"'),
                    last_modified=item["LastModified"].astimezone(UTC),
                )
                for item in page.get("Contents", [])
            )
            if not page.get("IsTruncated"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        return infos[:limit]

    def copy(self, source_key: str, dest_key: str, dest_bucket: str | None = None) -> ObjectInfo:
        target = self if dest_bucket is None else S3ObjectStore(self._storage, dest_bucket)
        check_object_key(self.bucket, source_key)
        check_object_key(target.bucket, dest_key)
        extra: dict[str, Any] = {}
        if self._storage.server_side_encryption:
            extra["ServerSideEncryption"] = self._storage.server_side_encryption
        try:
            self._client.copy_object(
                Bucket=target.bucket,
                Key=dest_key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                MetadataDirective="COPY",
                **extra,
            )
        except ClientError as error:
            if _error_code(error) == "NoSuchBucket":
                raise BucketNotFound(
                    f"cannot copy {source_key!r} from bucket {self.bucket!r} to {target.bucket!r}: "
                    "one of the buckets does not exist"
                ) from error
            raise self._translate(error, source_key) from error
        return target._head_after_write(dest_key)

    def delete(self, key: str) -> None:
        check_object_key(self.bucket, key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            raise self._translate(error, key) from error

    def _head_after_write(self, key: str) -> ObjectInfo:
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(
                f"object {key!r} in bucket {self.bucket!r} was deleted right after it was written"
            )
        requested = self._storage.server_side_encryption
        if requested and info.server_side_encryption != requested:
            # Plaintext must not stay behind: the write did not happen as asked, so neither does the object.
            self.delete(key)
            raise ObjectNotEncrypted(
                f"object {key!r} in bucket {self.bucket!r} was stored with server-side encryption "
                f"{info.server_side_encryption!r}, not the {requested!r} the write asked for; deleted it"
            )
        return info

    def _translate(self, error: ClientError, key: str) -> Exception:
        code = _error_code(error)
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(f"object {key!r} does not exist in bucket {self.bucket!r}")
        if code == "NoSuchBucket":
            return BucketNotFound(f"bucket {self.bucket!r} does not exist")
        return error
