"""Retiring settled uploads from the partition set Dagster holds, and restoring one for a re-run.

Dagster's UI, sensors and backfills slow down with every partition of an asset, and the uploads
sensor lists every object under the uploads prefix on each tick. An upload settled (published,
quarantined or rejected) before the retention's horizon therefore leaves both: its dynamic partition
is deleted and its original moves from the uploads prefix to the retired prefix (same bucket, same
key below the prefix). Its `media_uploads` row stays, marked `retired_at`. Restoring reverses both.

Plain Python: the partition set is the small `UploadPartitions` protocol, filled in by the
housekeeping job and the CLI with the Dagster instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from hub_pipelines.core.ports import ObjectStore, SqlDatabase
from hub_pipelines.landing.upload_records import (
    mark_restored,
    mark_retired,
    settled_uploads_to_retire,
    upload_outcome,
)
from hub_pipelines.landing.uploads import key_refusal, object_key_for


class UploadPartitions(Protocol):
    """The uploads' dynamic partitions as the Dagster instance holds them."""

    def in_flight(self) -> set[str]:
        """Partition keys of media runs queued or running now."""
        ...

    def remove(self, partition_key: str) -> None: ...

    def add(self, partition_key: str) -> None: ...


class RetiredPrefixOverlaps(ValueError):
    """The retired prefix lies under the uploads prefix: retired originals would be listed as new uploads."""


class UploadNotRecorded(LookupError):
    """A restore named a partition key `media_uploads` has no row for."""


@dataclass(frozen=True)
class RetirementReport:
    retired: int
    originals_moved: int
    left_in_flight: int


@dataclass(frozen=True)
class RestoredUpload:
    partition_key: str
    object_key: str
    original_moved_back: bool
    original_present: bool


def _check_prefixes(uploads_prefix: str, retired_prefix: str) -> None:
    if retired_prefix.startswith(uploads_prefix) or uploads_prefix.startswith(retired_prefix):
        raise RetiredPrefixOverlaps(
            f"retired uploads prefix {retired_prefix!r} and uploads prefix {uploads_prefix!r} overlap: "
            "the sensor would list retired originals as uploads"
        )


def _move(store: ObjectStore, source: str, target: str) -> bool:
    if store.head(source) is None:
        return False
    store.copy(source, target)
    store.delete(source)
    return True


def retire_settled_uploads(
    database: SqlDatabase,
    uploads: ObjectStore,
    partitions: UploadPartitions,
    *,
    uploads_prefix: str,
    retired_prefix: str,
    settled_before: datetime,
    now: datetime,
    batch_size: int = 500,
) -> RetirementReport:
    """Retires every upload settled before `settled_before`, batch by batch, oldest first.

    Never one a media run is queued for or running, nor one whose original was replaced by new bytes
    since it settled (the sensor is about to run it). Each step repeats safely: the original moves
    when it is still there, the partition is deleted, and the row is marked last, only if it is still
    settled, so a run killed anywhere is finished by the next one.
    """
    _check_prefixes(uploads_prefix, retired_prefix)
    retired = moved = left = 0
    after: tuple[datetime | None, str] | None = None
    while True:
        batch = settled_uploads_to_retire(database, settled_before, batch_size, after)
        if not batch:
            return RetirementReport(retired, moved, left)
        after = (batch[-1].settled_at, batch[-1].partition_key)
        in_flight = partitions.in_flight()
        done: list[str] = []
        for upload in batch:
            if upload.partition_key in in_flight:
                left += 1
                continue
            original = object_key_for(upload.partition_key, uploads_prefix)
            info = (
                uploads.head(original)
                if key_refusal(uploads.bucket, original, uploads_prefix) is None
                else None
            )
            if info is not None:
                if info.etag.strip('"') != upload.etag.strip('"'):
                    left += 1
                    continue
                uploads.copy(original, object_key_for(upload.partition_key, retired_prefix))
                uploads.delete(original)
                moved += 1
            partitions.remove(upload.partition_key)
            done.append(upload.partition_key)
        retired += len(mark_retired(database, done, settled_before, now))


def restore_uploads(
    database: SqlDatabase,
    uploads: ObjectStore,
    partitions: UploadPartitions,
    partition_keys: Iterable[str],
    *,
    uploads_prefix: str,
    retired_prefix: str,
    now: datetime,
) -> list[RestoredUpload]:
    """Adds retired uploads back: original back under the uploads prefix, partition registered, row unretired.

    Restoring an upload that was never retired only registers its partition again (and restarts its
    retention days). `original_present` is False when no original is left to run on (a quarantined
    upload's original lives in the quarantine bucket).
    """
    _check_prefixes(uploads_prefix, retired_prefix)
    keys = list(partition_keys)
    unknown = [key for key in keys if upload_outcome(database, key) is None]
    if unknown:
        raise UploadNotRecorded(
            f"no upload in media_uploads with partition key {', '.join(map(repr, unknown))}"
        )
    restored = []
    for partition_key in keys:
        original = object_key_for(partition_key, uploads_prefix)
        present = uploads.head(original) is not None
        # A newer upload under the same key wins over the retired original.
        moved_back = not present and _move(uploads, object_key_for(partition_key, retired_prefix), original)
        present = present or moved_back
        partitions.add(partition_key)
        mark_restored(database, partition_key, now)
        restored.append(RestoredUpload(partition_key, original, moved_back, present))
    return restored
