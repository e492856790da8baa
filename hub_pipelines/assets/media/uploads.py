import hashlib
from datetime import UTC, datetime

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import originals_layout, uploads_partitions
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.core.ports import ObjectStorage, SqlDatabase
from hub_pipelines.landing.upload_records import UploadRecord, record_upload
from hub_pipelines.landing.uploads import key_refusal
from hub_pipelines.media.printable import printable


@dg.asset(
    key=["media", "uploads"],
    group_name="media",
    partitions_def=uploads_partitions,
    kinds={"s3", "sql"},
    retry_policy=EXTERNAL_CALL_RETRY,
)
@instrumented(records=1)
def uploads(
    context: dg.AssetExecutionContext,
    objects: dg.ResourceParam[ObjectStorage],
    database: dg.ResourceParam[SqlDatabase],
) -> dg.MaterializeResult:
    """One uploaded object as it arrived: key, size, ETag, sha256 and first-seen time, recorded once.

    An upload published, quarantined or rejected more than HUB_UPLOADS_RETENTION_DAYS ago is retired
    by `media_uploads_retention_job`: its partition leaves this list while its `media_uploads` row
    stays. `hub-pipelines uploads restore <partition key>` adds it back for a re-run, which reads the
    original from HUB_UPLOADS_SETTLED_PREFIX, where the run that settled it moved it.
    """
    layout = originals_layout()
    object_key = layout.arrived(context.partition_key)
    refusal = key_refusal(settings.UPLOADS_BUCKET, object_key, settings.UPLOADS_PREFIX)
    if refusal:
        # Only a hand-made partition gets here: the sensor records such objects as rejected, without a run.
        raise dg.Failure(f"upload partition {context.partition_key}: {refusal}", allow_retries=False)
    store = objects.bucket(settings.UPLOADS_BUCKET)
    found = layout.locate(store, context.partition_key)
    if found is None:
        raise dg.Failure(
            f"upload {object_key!r} (partition {context.partition_key}) is not in bucket "
            f"'{settings.UPLOADS_BUCKET}', nor under '{layout.settled_prefix}': it was deleted or moved "
            "before it could be recorded"
        )
    source_key, info = found
    digest = hashlib.sha256()
    size = 0
    for chunk in store.stream(source_key):
        digest.update(chunk)
        size += len(chunk)
    record = record_upload(
        database,
        UploadRecord(
            partition_key=context.partition_key,
            object_key=object_key,
            size=size,
            etag=info.etag,
            sha256=digest.hexdigest(),
            content_type_claimed=info.content_type,
            seen_at=datetime.now(UTC),
        ),
    )
    return dg.MaterializeResult(
        metadata={
            "object_key": printable(object_key),
            "bytes": size,
            "etag": info.etag,
            "sha256": record.sha256,
            "first_seen_at": record.seen_at.isoformat(),
            "claimed_content_type": printable(info.content_type or ""),
        }
    )
