"""The S3 calls behind `S3ObjectStorage`: one bucket's objects through boto3, botocore's errors translated.

Imported when a process first uses an S3 bucket (see `object_storage`), never to define the code location.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC
from typing import IO, TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from hub_pipelines.core.ports import BucketNotFound, ObjectInfo, ObjectNotFound
from hub_pipelines.resources.object_keys import check_key_prefix, check_object_key
from hub_pipelines.resources.object_storage import ObjectNotEncrypted
from hub_pipelines.resources.object_storage_local import normalise_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from hub_pipelines.resources.object_storage import S3ObjectStorage


def create_bucket(client: S3Client, name: str, region: str | None) -> None:
    """Create bucket `name` in `region`; a bucket this account already owns is left as it is."""
    request: dict[str, Any] = {"Bucket": name}
    if region and region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**request)
    except ClientError as error:
        if _error_code(error) != "BucketAlreadyOwnedByYou":
            raise


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

    def _transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self._storage.multipart_threshold_mb << 20,
            multipart_chunksize=self._storage.multipart_chunk_mb << 20,
        )

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
                    data, self.bucket, key, ExtraArgs=extra, Config=self._transfer_config()
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
