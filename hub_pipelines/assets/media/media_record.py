import dagster as dg

from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.assets.media.steps import originals, reported_as_failures, staging
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY, PUBLISHED_MEDIA_FRESHNESS
from hub_pipelines.core.ports import Cdn, ObjectStorage, SqlDatabase, Webhook
from hub_pipelines.media.publication_record import record_published_upload
from hub_pipelines.media.records import publications_without_clean_scan
from hub_pipelines.resources.media.media_settings import MediaSettings

CLEAN_SCAN_CHECK = "published_uploads_have_clean_scans"


@dg.asset(
    key=["media", "media_record"],
    freshness_policy=PUBLISHED_MEDIA_FRESHNESS,
    group_name="media",
    partitions_def=uploads_partitions,
    retry_policy=EXTERNAL_CALL_RETRY,
    deps=[dg.AssetKey(["media", "published"])],
    kinds={"sql", "cloudfront"},
)
@instrumented(records=1)
def media_record(
    context: dg.AssetExecutionContext,
    objects: dg.ResourceParam[ObjectStorage],
    database: dg.ResourceParam[SqlDatabase],
    cdn: dg.ResourceParam[Cdn],
    webhook: dg.ResourceParam[Webhook],
    media_settings: MediaSettings,
) -> dg.MaterializeResult:
    """The upload and its published variants in SQL (keys, sizes, checksums, URLs), announced by a signed webhook."""
    with reported_as_failures(context):
        recorded = record_published_upload(
            originals(objects),
            staging(objects, media_settings),
            database,
            cdn,
            webhook,
            context.partition_key,
        )
    publication, announced = recorded.publication, recorded.announcement
    if announced.error:
        context.log.error(f"webhook for {publication.object_key!r} dead-lettered: {announced.error}")
    if recorded.cdn_invalidations:
        context.log.info(
            f"invalidated replaced paths of {publication.object_key!r}: {recorded.cdn_invalidations}"
        )
    return dg.MaterializeResult(
        metadata={
            "variants": len(publication.variants),
            "bytes_in": publication.bytes_in,
            "bytes_out": publication.bytes_out,
            "webhook": announced.status,
            "webhook_attempts": announced.attempts,
            "delivery_id": announced.delivery_id,
            "replaced_upload": recorded.replaced_upload,
            "cdn_invalidations": dg.MetadataValue.json(recorded.cdn_invalidations),
        }
    )


@dg.asset_check(
    asset=media_record,
    name=CLEAN_SCAN_CHECK,
    partitions_def=uploads_partitions,
    description="No published upload lacks a clean scan verdict on the exact bytes it was published from.",
)
def published_uploads_have_clean_scans(
    context: dg.AssetCheckExecutionContext, database: dg.ResourceParam[SqlDatabase]
) -> dg.AssetCheckResult:
    unscanned = publications_without_clean_scan(database)
    return dg.AssetCheckResult(
        passed=not unscanned,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "published_without_clean_scan": len(unscanned),
            "examples": [f"{partition} (sha256 {sha256})" for partition, sha256 in unscanned[:20]],
            "this_partition_ok": context.partition_key not in {partition for partition, _ in unscanned},
        },
    )
