"""Object storage on local disk: buckets as folders, objects as files, metadata in JSON sidecars.

Import it from `hub_pipelines.resources.object_storage`, beside its S3 counterpart.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import stat
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import dagster as dg

from hub_pipelines.core.ports import BucketNotFound, ObjectInfo, ObjectNotFound
from hub_pipelines.resources.object_keys import InvalidObjectName, check_key_prefix, check_object_key

_READ_SIZE = 1 << 20
_MAX_NAME_BYTES = 255
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Sidecars and staged writes live beside the buckets under names no S3 bucket can have (a leading
# dot), so they never show up in a bucket's listing and never collide with a key.
_SIDECAR_DIR = ".meta"
_STAGING_DIR = ".staging"


def normalise_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    # S3 lowercases user-metadata names; doing the same locally keeps lookups portable.
    return {name.lower(): str(value) for name, value in (metadata or {}).items()}


def chunks_of(data: bytes | IO[bytes]) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    while chunk := data.read(_READ_SIZE):
        yield chunk


def _check_bucket_name(name: str) -> None:
    if not _BUCKET_NAME.fullmatch(name) or ".." in name:
        raise InvalidObjectName(
            f"bucket name {name!r} is not valid: use 3-63 lowercase letters, digits, '.' or '-'"
        )


def _check_local_key(bucket: str, key: str) -> None:
    check_object_key(bucket, key)
    longest = max(len(segment.encode()) for segment in key.split("/"))
    if longest > _MAX_NAME_BYTES:
        raise InvalidObjectName(
            f"object key {key!r} in bucket {bucket!r} cannot be stored locally: a segment of {longest} "
            f"bytes is longer than a file name may be ({_MAX_NAME_BYTES})"
        )


def _mtime_utc(status: os.stat_result) -> datetime:
    return datetime.fromtimestamp(status.st_mtime, tz=UTC)


class LocalObjectStorage(dg.ConfigurableResource):
    """Buckets as folders under `root`; each object a plain file at `<root>/<bucket>/<key>`.

    Content type, cache-control, user metadata and etag sit in a JSON sidecar at
    `<root>/.meta/<bucket>/<key>`. Every write lands in `<root>/.staging` first and is moved into
    place with `os.replace`, so a reader sees the old object or the new one, never half of one.
    Nothing is encrypted on disk, and every object says so: its `server_side_encryption` is None.
    Keys follow `hub_pipelines.resources.object_keys` on every call, as on S3.
    """

    root: str

    def create_bucket(self, name: str) -> None:
        _check_bucket_name(name)
        (Path(self.root) / name).mkdir(parents=True, exist_ok=True)

    def bucket(self, name: str) -> LocalObjectStore:
        _check_bucket_name(name)
        return LocalObjectStore(Path(self.root), name)


class LocalObjectStore:
    """One bucket folder of a `LocalObjectStorage`."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.bucket = bucket
        self._root = root
        self._objects = root / bucket
        self._sidecars = root / _SIDECAR_DIR / bucket

    def put(
        self,
        key: str,
        data: bytes | IO[bytes],
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        attributes = {
            "content_type": content_type,
            "cache_control": cache_control,
            "metadata": normalise_metadata(metadata),
        }
        return self._write(key, chunks_of(data), attributes)

    def get(self, key: str) -> bytes:
        with self._open(key) as file:
            return file.read()

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        file = self._open(key)

        def chunks() -> Iterator[bytes]:
            with file:
                while chunk := file.read(chunk_size):
                    yield chunk

        return chunks()

    def head(self, key: str) -> ObjectInfo | None:
        _check_local_key(self.bucket, key)
        self._require_bucket()
        try:
            with open(self._objects / key, "rb") as file:
                return self._info(key, file, listing=False)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def list_after(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[ObjectInfo]:
        check_key_prefix(self.bucket, prefix)
        self._require_bucket()
        folder, _, _ = prefix.rpartition("/")
        if limit <= 0:
            return []
        keys = (
            key
            for key in self._keys_under(self._objects / folder if folder else self._objects)
            if key.startswith(prefix) and (start_after is None or key > start_after)
        )
        infos = []
        for key in heapq.nsmallest(limit, keys):
            try:
                with open(self._objects / key, "rb") as file:
                    infos.append(self._info(key, file, listing=True))
            except FileNotFoundError:
                continue  # deleted since the walk: S3 would not list it either
        return infos

    def copy(self, source_key: str, dest_key: str, dest_bucket: str | None = None) -> ObjectInfo:
        _check_local_key(self.bucket, source_key)
        _check_local_key(dest_bucket or self.bucket, dest_key)
        if dest_bucket is not None:
            _check_bucket_name(dest_bucket)
        target = self if dest_bucket is None else LocalObjectStore(self._root, dest_bucket)
        target._require_bucket()
        with self._open(source_key) as source:
            record = self._sidecar_matching(source_key, os.fstat(source.fileno())) or {}
            attributes = {name: record.get(name) for name in ("content_type", "cache_control", "metadata")}
            return target._write(dest_key, chunks_of(source), attributes)

    def delete(self, key: str) -> None:
        _check_local_key(self.bucket, key)
        self._require_bucket()
        try:
            (self._objects / key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        (self._sidecars / key).unlink(missing_ok=True)
        # S3 has no folders: once a prefix's last object goes, so must its folder, or a later put of
        # the prefix itself as a key would collide with it.
        for base in (self._objects, self._sidecars):
            for parent in (base / key).parents:
                if parent == base:
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break

    def _require_bucket(self) -> None:
        if not self._objects.is_dir():
            raise BucketNotFound(f"bucket {self.bucket!r} does not exist under {str(self._root)!r}")

    def _open(self, key: str) -> IO[bytes]:
        _check_local_key(self.bucket, key)
        self._require_bucket()
        try:
            return open(self._objects / key, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} does not exist in bucket {self.bucket!r}") from None

    def _write(self, key: str, chunks: Iterable[bytes], attributes: Mapping[str, Any]) -> ObjectInfo:
        _check_local_key(self.bucket, key)
        self._require_bucket()
        staging = self._root / _STAGING_DIR
        staging.mkdir(exist_ok=True)
        staged_object = staging / f"{uuid.uuid4().hex}.object"
        staged_sidecar = staging / f"{uuid.uuid4().hex}.json"
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with open(staged_object, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                status = os.fstat(out.fileno())
            # The sidecar names the inode and mtime of the bytes it describes; os.replace keeps
            # both, so a reader can tell a sidecar that belongs to other bytes of the same key.
            record = {
                **attributes,
                "etag": digest.hexdigest(),
                "size": status.st_size,
                "inode": status.st_ino,
                "mtime_ns": status.st_mtime_ns,
            }
            staged_sidecar.write_text(json.dumps(record))
            try:
                (self._objects / key).parent.mkdir(parents=True, exist_ok=True)
                (self._sidecars / key).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged_object, self._objects / key)
            except (FileExistsError, IsADirectoryError, NotADirectoryError) as error:
                raise InvalidObjectName(
                    f"object key {key!r} in bucket {self.bucket!r} cannot be stored locally: "
                    "the same name is both an object and a prefix of other keys, which a folder cannot hold"
                ) from error
            os.replace(staged_sidecar, self._sidecars / key)
        finally:
            staged_object.unlink(missing_ok=True)
            staged_sidecar.unlink(missing_ok=True)
        return ObjectInfo(
            key=key,
            size=status.st_size,
            etag=record["etag"],
            last_modified=_mtime_utc(status),
            content_type=record["content_type"],
            cache_control=record["cache_control"],
            metadata=dict(record["metadata"] or {}),
        )

    def _sidecar_matching(self, key: str, status: os.stat_result) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads((self._sidecars / key).read_text())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError):
            return None
        same_bytes = (record.get("inode"), record.get("mtime_ns"), record.get("size")) == (
            status.st_ino,
            status.st_mtime_ns,
            status.st_size,
        )
        return record if same_bytes else None

    def _info(self, key: str, file: IO[bytes], *, listing: bool) -> ObjectInfo:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise IsADirectoryError(key)
        record = self._sidecar_matching(key, status)
        if record is None:
            # A file dropped in by hand, or one caught between its two renames: describe the bytes
            # actually open rather than pairing them with another version's metadata.
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := file.read(_READ_SIZE):
                digest.update(chunk)
            record = {"etag": digest.hexdigest(), "metadata": {}}
        common = {
            "key": key,
            "size": status.st_size,
            "etag": record["etag"],
            "last_modified": _mtime_utc(status),
        }
        if listing:
            return ObjectInfo(**common)
        return ObjectInfo(
            **common,
            content_type=record.get("content_type"),
            cache_control=record.get("cache_control"),
            metadata=dict(record.get("metadata") or {}),
        )

    def _keys_under(self, folder: Path) -> Iterator[str]:
        for directory, _, files in os.walk(folder):
            for name in files:
                yield Path(directory, name).relative_to(self._objects).as_posix()
