"""Uploads: a stable partition key per object, and which listed objects are new since the cursor."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote

from hub_pipelines.core.ports import ObjectInfo, ObjectStore
from hub_pipelines.resources.object_keys import InvalidObjectName, check_object_key

MAX_PARTITION_KEY_BYTES = 768


def partition_key_for(object_key: str, prefix: str) -> str:
    """A safe, stable, reversible partition key for an uploaded object.

    The key below the prefix, percent-encoded, with '/' shown as '~' so it reads like a path in the UI:
    'incoming/2026/cat photo.jpg' becomes '2026~cat%20photo.jpg'. Commas, brackets and '...' (which
    Dagster's partition-range syntax uses) never appear unescaped. Reversible, so a backfill from the UI
    or the CLI finds the object from its partition key alone.
    """
    relative = object_key[len(prefix) :] if object_key.startswith(prefix) else object_key
    encoded = (
        quote(relative, safe="/", errors="surrogatepass")
        .replace("~", "%7E")
        .replace(".", "%2E" if ".." in relative else ".")
    )
    return encoded.replace("/", "~")


def object_key_for(partition_key: str, prefix: str) -> str:
    """The object key a partition key was made from."""
    return prefix + unquote(partition_key.replace("~", "/"), errors="surrogatepass")


class SettledPrefixOverlaps(ValueError):
    """The settled prefix and the uploads prefix overlap: settled originals would be listed as uploads."""


@dataclass(frozen=True)
class OriginalsLayout:
    """Where an upload's original lives, in the uploads bucket.

    Under `uploads_prefix` from its arrival until a run settles it (published or rejected), then
    under `settled_prefix` with the same key below the prefix: out of the sensor's listing, still
    there for a re-run. A re-upload arrives under `uploads_prefix` again and wins.
    """

    uploads_prefix: str
    settled_prefix: str

    def __post_init__(self) -> None:
        if self.settled_prefix.startswith(self.uploads_prefix) or self.uploads_prefix.startswith(
            self.settled_prefix
        ):
            raise SettledPrefixOverlaps(
                f"settled uploads prefix {self.settled_prefix!r} and uploads prefix {self.uploads_prefix!r} "
                "overlap: the sensor would list settled originals as new uploads"
            )

    def arrived(self, partition_key: str) -> str:
        return object_key_for(partition_key, self.uploads_prefix)

    def settled(self, partition_key: str) -> str:
        return object_key_for(partition_key, self.settled_prefix)

    def locate(self, store: ObjectStore, partition_key: str) -> tuple[str, ObjectInfo] | None:
        """The original's key and info: the arrived one when there is one, else the settled one."""
        for key in (self.arrived(partition_key), self.settled(partition_key)):
            info = store.head(key)
            if info is not None:
                return key, info
        return None

    def set_aside(self, store: ObjectStore, partition_key: str, etag: str) -> bool:
        """Moves the arrived original to the settled prefix if it still holds the bytes of `etag`.

        An original replaced meanwhile (new bytes, new ETag) stays: the sensor runs it next.
        """
        info = store.head(self.arrived(partition_key))
        if info is None or info.etag.strip('"') != etag.strip('"'):
            return False
        store.copy(self.arrived(partition_key), self.settled(partition_key))
        store.delete(self.arrived(partition_key))
        return True


def run_key_for(partition_key: str, etag: str) -> str:
    """One run per partition and content: a re-upload with new bytes has a new ETag and runs again."""
    return f"{partition_key}@{etag.strip(chr(34))}"


@dataclass(frozen=True)
class UploadCursor:
    """The newest (last-modified, key) position the sensor has handed to runs."""

    last_modified: float = 0.0
    key: str = ""

    def to_json(self) -> str:
        return json.dumps({"last_modified": self.last_modified, "key": self.key})

    @classmethod
    def from_json(cls, text: str | None) -> UploadCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(float(data["last_modified"]), str(data["key"]))


def _position(info: ObjectInfo) -> tuple[float, str]:
    return (_epoch(info.last_modified), info.key)


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


@dataclass(frozen=True)
class UploadBatch:
    new_objects: list[ObjectInfo]
    late_objects: list[ObjectInfo]
    cursor: UploadCursor
    pending_after_batch: int


def plan_upload_batch(
    listed: Iterable[ObjectInfo],
    cursor: UploadCursor,
    max_objects: int,
    lookback_seconds: float,
    already_taken: Callable[[list[ObjectInfo]], set[str]],
) -> UploadBatch:
    """New objects in (last-modified, key) order after the cursor, at most max_objects of them.

    Ordering by (last-modified, key) rather than by time alone makes ties exact: when thousands of
    objects share one last-modified second, the cursor stops between two keys of that second and the
    next tick resumes there. Object stores can list an object a moment after a later one, so objects
    up to `lookback_seconds` before the cursor are looked at again and taken unless `already_taken`
    (asked once, with all of them) returns their key.
    """
    objects = sorted(listed, key=_position)
    position = (cursor.last_modified, cursor.key)
    newer = [info for info in objects if _position(info) > position]
    batch = newer[:max_objects]
    horizon = cursor.last_modified - lookback_seconds
    behind = [
        info for info in objects if horizon <= _epoch(info.last_modified) and _position(info) <= position
    ]
    taken = already_taken(behind) if behind else set()
    late = [info for info in behind if info.key not in taken][: max(0, max_objects - len(batch))]
    next_cursor = UploadCursor(*_position(batch[-1])) if batch else cursor
    return UploadBatch(batch, late, next_cursor, len(newer) - len(batch))


@dataclass(frozen=True)
class RefusedUpload:
    """A listed object no run can process: its key breaks the stores' key rule, or keys made from it would."""

    info: ObjectInfo
    partition_key: str
    reason: str


def refuse_invalid_keys(
    objects: Iterable[ObjectInfo], bucket: str, prefix: str
) -> tuple[list[ObjectInfo], list[RefusedUpload]]:
    """The objects a run can read, and those it cannot (with the reason).

    An S3 server can hold keys our stores refuse (SeaweedFS keeps a newline, an ANSI escape or a
    trailing '/'), and a run for one could only fail: the key is refused before any request.
    """
    readable: list[ObjectInfo] = []
    refused: list[RefusedUpload] = []
    for info in objects:
        reason = key_refusal(bucket, info.key, prefix)
        if reason:
            refused.append(RefusedUpload(info, partition_key_for(info.key, prefix), reason))
        else:
            readable.append(info)
    return readable, refused


def key_refusal(bucket: str, key: str, prefix: str) -> str | None:
    """Why no run can process the upload `key` (the key shown escaped), or None when one can.

    Besides the stores' key rule, the partition key is bounded: staged renditions are keyed under it
    (`staging/<partition key>/<sha256>/<fingerprint>/<file>`, about 120 bytes more), and percent-encoding
    can triple a name's bytes, so a valid key could make staged keys pass S3's 1024 bytes mid-run.
    """
    try:
        check_object_key(bucket, key)
    except InvalidObjectName as error:
        return str(error)
    size = len(partition_key_for(key, prefix).encode())
    if size > MAX_PARTITION_KEY_BYTES:
        return (
            f"object key {key!r} in bucket {bucket!r} is too long to process: its partition key is {size} "
            f"bytes percent-encoded, more than {MAX_PARTITION_KEY_BYTES}, and the staged renditions' keys "
            "would pass S3's 1024"
        )
    return None
