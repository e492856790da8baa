import dagster as dg

from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.assets.media.steps import originals, reported_as_failures
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.core.ports import ObjectStorage, SqlDatabase
from hub_pipelines.media.arrival import record_arrival
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
    with reported_as_failures(context):
        arrival = record_arrival(originals(objects), database, context.partition_key)
    return dg.MaterializeResult(
        metadata={
            "object_key": printable(arrival.object_key),
            "bytes": arrival.size,
            "etag": arrival.etag,
            "sha256": arrival.recorded.sha256,
            "first_seen_at": arrival.recorded.seen_at.isoformat(),
            "claimed_content_type": printable(arrival.claimed_content_type or ""),
        }
    )
