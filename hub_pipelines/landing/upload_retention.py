"""Keeping what Dagster holds and what the uploads sensor lists bounded as uploads pile up.

Dagster's UI, sensors and backfills slow down with every partition of an asset, and the uploads
sensor lists every object under the uploads prefix on each tick. So a settled upload's original is
set aside under the settled prefix by the run that settles it (`set_settled_original_aside`), and
once it has been settled for the retention its dynamic partition is retired
(`retire_settled_uploads`, which also sets aside any original a run could not). Its `media_uploads`
row stays, marked `retired_at`; `restore_uploads` registers the partition again for a re-run, which
reads the original from the settled prefix.

Plain Python: the partition set is the small `UploadPartitions` protocol, filled in by the
housekeeping job and the CLI with the Dagster instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from hub_pipelines.core.ports import ObjectStore, SqlDatabase, UploadPartitions
from hub_pipelines.landing.upload_records import (
    mark_restored,
    mark_retired,
    settled_uploads_to_retire,
    upload_etag,
)
from hub_pipelines.landing.uploads import OriginalsLayout, key_refusal


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
    original_key: str | None


def set_settled_original_aside(
    database: SqlDatabase, uploads: ObjectStore, layout: OriginalsLayout, partition_key: str
) -> bool:
    """Moves the original a run just settled out of the uploads prefix, unless new bytes replaced it."""
    etag = upload_etag(database, partition_key)
    return etag is not None and layout.set_aside(uploads, partition_key, etag)


def retire_settled_uploads(
    database: SqlDatabase,
    uploads: ObjectStore,
    partitions: UploadPartitions,
    layout: OriginalsLayout,
    *,
    settled_before: datetime,
    now: datetime,
    batch_size: int = 500,
) -> RetirementReport:
    """Retires every upload settled before `settled_before`, batch by batch, oldest first.

    Never one a media run is queued for or running, nor one whose original was replaced by new bytes
    since it settled (the sensor is about to run it). Each step repeats safely: an original still
    under the uploads prefix is set aside, the partition is deleted, and the row is marked last, only
    if it is still settled, so a run killed anywhere is finished by the next one.
    """
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
            arrived = layout.arrived(upload.partition_key)
            if key_refusal(uploads.bucket, arrived, layout.uploads_prefix) is None:
                info = uploads.head(arrived)
                if info is not None and info.etag.strip('"') != upload.etag.strip('"'):
                    left += 1
                    continue
                moved += layout.set_aside(uploads, upload.partition_key, upload.etag)
            partitions.remove(upload.partition_key)
            done.append(upload.partition_key)
        marked = mark_retired(database, done, settled_before, now)
        # A run landed these again between the check and the delete: their partition comes back.
        for partition_key in set(done) - set(marked):
            partitions.add(partition_key)
            left += 1
        retired += len(marked)


def restore_uploads(
    database: SqlDatabase,
    uploads: ObjectStore,
    partitions: UploadPartitions,
    layout: OriginalsLayout,
    partition_keys: Iterable[str],
    *,
    now: datetime,
) -> list[RestoredUpload]:
    """Registers uploads' partitions again and unretires their rows; a re-run reads the settled original.

    Restoring an upload that was never retired only registers its partition again (and restarts its
    retention days). `original_key` is None when no original is left to run on (a quarantined
    upload's original lives in the quarantine bucket).
    """
    keys = list(partition_keys)
    unknown = [key for key in keys if upload_etag(database, key) is None]
    if unknown:
        raise UploadNotRecorded(
            f"no upload in media_uploads with partition key {', '.join(map(repr, unknown))}"
        )
    restored = []
    for partition_key in keys:
        original = layout.locate(uploads, partition_key)
        partitions.add(partition_key)
        mark_restored(database, partition_key, now)
        restored.append(RestoredUpload(partition_key, original[0] if original else None))
    return restored
