"""The first media step: an uploaded object as it arrived, hashed and recorded once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.landing.upload_records import UploadRecord, record_upload
from hub_pipelines.landing.uploads import key_refusal
from hub_pipelines.media.originals import Originals
from hub_pipelines.media.step_failures import StepBlocked, StepRefused


@dataclass(frozen=True)
class Arrival:
    object_key: str
    size: int
    etag: str
    claimed_content_type: str | None
    recorded: UploadRecord


def record_arrival(originals: Originals, database: SqlDatabase, partition_key: str) -> Arrival:
    """The upload's key, size, ETag and sha256 (streamed, never whole in memory), recorded with the
    time it was first seen; a re-run keeps that first time."""
    object_key = originals.arrived(partition_key)
    refusal = key_refusal(originals.bucket, object_key, originals.layout.uploads_prefix)
    if refusal:
        # Only a hand-made partition gets here: the sensor records such objects as rejected, without a run.
        raise StepRefused(f"upload partition {partition_key}: {refusal}")
    found = originals.locate(partition_key)
    if found is None:
        raise StepBlocked(
            f"upload {object_key!r} (partition {partition_key}) is not in bucket "
            f"'{originals.bucket}', nor under '{originals.layout.settled_prefix}': it was deleted or moved "
            "before it could be recorded"
        )
    source_key, info = found
    digest = hashlib.sha256()
    size = 0
    for chunk in originals.store.stream(source_key):
        digest.update(chunk)
        size += len(chunk)
    recorded = record_upload(
        database,
        UploadRecord(
            partition_key=partition_key,
            object_key=object_key,
            size=size,
            etag=info.etag,
            sha256=digest.hexdigest(),
            content_type_claimed=info.content_type,
            seen_at=datetime.now(UTC),
        ),
    )
    return Arrival(object_key, size, info.etag, info.content_type, recorded)
