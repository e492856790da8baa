import dagster as dg

from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.assets.media.renditions import publication_manifest_key, staging_manifest_key
from hub_pipelines.assets.policies import PUBLISHED_MEDIA_FRESHNESS
from hub_pipelines.core.ports import ObjectNotFound, ObjectStorage, SqlDatabase
from hub_pipelines.media.manifests import (
    PublicationManifest,
    PublishedVariant,
    decode_publication,
    decode_staging,
    encode,
)
from hub_pipelines.media.printable import printable
from hub_pipelines.media.publishing import (
    ORIGIN,
    PublishFailed,
    content_key,
    copy_matches,
    publish_staged,
    transient_storage_error,
)
from hub_pipelines.media.records import scan_verdict_for
from hub_pipelines.resources.cdn import Cdn
from hub_pipelines.resources.media_settings import MediaSettings

EVERY_REGION_CHECK = "every_variant_in_every_region"


@dg.asset(
    key=["media", "published"],
    freshness_policy=PUBLISHED_MEDIA_FRESHNESS,
    group_name="media",
    partitions_def=uploads_partitions,
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
    staging = objects.bucket(media_settings.staging_bucket)
    try:
        manifest = decode_staging(staging.get(staging_manifest_key(media_settings, context.partition_key)))
    except ObjectNotFound as error:
        raise dg.Failure(
            f"upload partition '{context.partition_key}' has no staged renditions; materialize media/renditions first"
        ) from error
    verdict = scan_verdict_for(database, context.partition_key, manifest.source_sha256)
    if verdict is None or not verdict.clean:
        raise dg.Failure(
            f"refusing to publish upload {manifest.object_key!r} (sha256 {manifest.source_sha256}): "
            "no clean scan verdict for these bytes",
            allow_retries=False,
        )
    regions = list(media_settings.region_buckets)
    try:
        report = publish_staged(
            manifest.object_key,
            manifest.variants,
            staging,
            objects.bucket(media_settings.origin_bucket),
            {region: objects.bucket(bucket) for region, bucket in media_settings.region_buckets.items()},
            key_prefix=media_settings.published_prefix,
            policy=media_settings.retry_policy(media_settings.publish_attempts, [transient_storage_error]),
            max_concurrency=media_settings.replication_concurrency,
        )
    except PublishFailed as error:
        raise dg.Failure(printable(str(error)), allow_retries=False) from error

    variants = []
    for variant in manifest.variants:
        key = content_key(variant.sha256, variant.extension, media_settings.published_prefix)
        variants.append(PublishedVariant(variant=variant, key=key, urls=cdn.urls_for(key, regions)))
    publication = PublicationManifest(
        partition_key=manifest.partition_key,
        object_key=manifest.object_key,
        source_sha256=manifest.source_sha256,
        kind=manifest.kind,
        mime=manifest.mime,
        bytes_in=manifest.bytes_in,
        duration_seconds=manifest.duration_seconds,
        origin_bucket=media_settings.origin_bucket,
        region_buckets=dict(media_settings.region_buckets),
        variants=variants,
    )
    staging.put(publication_manifest_key(media_settings, context.partition_key), encode(publication),
                content_type="application/json")  # fmt: skip
    seconds = report.origin_seconds + report.replication_seconds
    return dg.MaterializeResult(
        metadata={
            "variants": len(variants),
            "regions": dg.MetadataValue.json(publication.region_buckets),
            "copies_made": report.copies_made,
            "copies_already_in_place": len(report.copies) - report.copies_made,
            "bytes_out": publication.bytes_out,
            "bytes_replicated": report.bytes_replicated,
            "origin_seconds": round(report.origin_seconds, 4),
            "replication_seconds": round(report.replication_seconds, 4),
            "publish_mb_per_s": round(report.bytes_replicated / seconds / 1e6, 2) if seconds else 0.0,
            "keys": dg.MetadataValue.json(sorted({published.key for published in variants})),
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
        raw = objects.bucket(media_settings.staging_bucket).get(
            publication_manifest_key(media_settings, partition_key)
        )
    except ObjectNotFound:
        return dg.AssetCheckResult(
            passed=False, description=f"partition '{partition_key}' has no publication"
        )
    publication = decode_publication(raw)
    buckets = {ORIGIN: publication.origin_bucket, **publication.region_buckets}
    wrong = [
        f"{where}/{item.key}"
        for item in publication.variants
        for where, bucket in buckets.items()
        if not copy_matches(objects.bucket(bucket), item.key, item.variant)
    ]
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={"copies_checked": len(publication.variants) * len(buckets), "missing_or_wrong": wrong[:50]},
    )
