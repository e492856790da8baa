import dagster as dg

from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.assets.media.steps import reported_as_failures, staging
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY, PUBLISHED_MEDIA_FRESHNESS
from hub_pipelines.core.ports import Cdn, ObjectStorage, SqlDatabase
from hub_pipelines.media.publication import Destinations, check_published_copies, publish_upload
from hub_pipelines.media.publishing import transient_storage_error
from hub_pipelines.media.step_failures import StepBlocked
from hub_pipelines.resources.media.media_settings import MediaSettings

EVERY_REGION_CHECK = "every_variant_in_every_region"


@dg.asset(
    key=["media", "published"],
    freshness_policy=PUBLISHED_MEDIA_FRESHNESS,
    group_name="media",
    partitions_def=uploads_partitions,
    retry_policy=EXTERNAL_CALL_RETRY,
    deps=[dg.AssetKey(["media", "renditions"])],
    kinds={"s3", "cloudfront"},
)
@instrumented(records=1)
def published(
    context: dg.AssetExecutionContext,
    objects: dg.ResourceParam[ObjectStorage],
    database: dg.ResourceParam[SqlDatabase],
    cdn: dg.ResourceParam[Cdn],
    media_settings: MediaSettings,
) -> dg.MaterializeResult:
    """Every rendition under its content-addressed key in the origin and every regional bucket, verified, with CDN URLs."""
    destinations = Destinations(
        media_settings.origin_bucket, dict(media_settings.region_buckets), media_settings.published_prefix
    )
    with reported_as_failures(context):
        publication = publish_upload(
            objects,
            staging(objects, media_settings),
            database,
            cdn,
            destinations,
            context.partition_key,
            policy=media_settings.retry_policy(media_settings.publish_attempts, [transient_storage_error]),
            max_concurrency=media_settings.replication_concurrency,
        )
    manifest, report = publication.manifest, publication.report
    seconds = report.origin_seconds + report.replication_seconds
    return dg.MaterializeResult(
        metadata={
            "variants": len(manifest.variants),
            "regions": dg.MetadataValue.json(manifest.region_buckets),
            "copies_made": report.copies_made,
            "copies_already_in_place": len(report.copies) - report.copies_made,
            "bytes_out": manifest.bytes_out,
            "bytes_replicated": report.bytes_replicated,
            "origin_seconds": round(report.origin_seconds, 4),
            "replication_seconds": round(report.replication_seconds, 4),
            "publish_mb_per_s": round(report.bytes_replicated / seconds / 1e6, 2) if seconds else 0.0,
            "keys": dg.MetadataValue.json(sorted({variant.key for variant in manifest.variants})),
        }
    )


@dg.asset_check(
    asset=published,
    name=EVERY_REGION_CHECK,
    partitions_def=uploads_partitions,
    description="Every published variant is in the origin and in every regional bucket with a matching checksum.",
)
def every_variant_in_every_region(
    context: dg.AssetCheckExecutionContext,
    objects: dg.ResourceParam[ObjectStorage],
    media_settings: MediaSettings,
) -> dg.AssetCheckResult:
    partition_key = context.partition_key
    try:
        copies = check_published_copies(objects, staging(objects, media_settings), partition_key)
    except StepBlocked:
        return dg.AssetCheckResult(
            passed=False, description=f"partition '{partition_key}' has no publication"
        )
    return dg.AssetCheckResult(
        passed=not copies.missing_or_wrong,
        metadata={"copies_checked": copies.checked, "missing_or_wrong": copies.missing_or_wrong[:50]},
    )
