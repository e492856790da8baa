import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import originals_layout, uploads_partitions
from hub_pipelines.assets.media.renditions import publication_manifest_key
from hub_pipelines.assets.policies import PUBLISHED_MEDIA_FRESHNESS
from hub_pipelines.core.ports import ObjectNotFound, ObjectStorage, SqlDatabase
from hub_pipelines.landing.upload_records import PUBLISHED, record_upload_outcome
from hub_pipelines.landing.upload_retention import set_settled_original_aside
from hub_pipelines.media.manifests import PublicationManifest, decode_publication
from hub_pipelines.media.records import (
    PublicationRecord,
    VariantRecord,
    dead_letter,
    keys_referenced_elsewhere,
    publications_without_clean_scan,
    published_variants,
    record_publication,
)
from hub_pipelines.resources.cdn import Cdn
from hub_pipelines.resources.media_settings import MediaSettings
from hub_pipelines.resources.webhook import Webhook, WebhookUndeliverable, encode_payload

PUBLISHED_EVENT = "media.published"
WEBHOOK_DEAD_LETTER_SOURCE = "media_webhook"
CLEAN_SCAN_CHECK = "published_uploads_have_clean_scans"


def announcement(publication: PublicationManifest) -> dict[str, object]:
    """The webhook body: the upload and where each of its variants can be fetched."""
    return {
        "event": PUBLISHED_EVENT,
        "upload": {
            "partition_key": publication.partition_key,
            "object_key": publication.object_key,
            "sha256": publication.source_sha256,
            "kind": publication.kind,
            "mime": publication.mime,
            "bytes": publication.bytes_in,
            "duration_seconds": publication.duration_seconds,
        },
        "variants": [
            {
                "label": item.variant.label,
                "format": item.variant.format,
                "mime": item.variant.mime,
                "width": item.variant.width,
                "height": item.variant.height,
                "bytes": item.variant.bytes,
                "sha256": item.variant.sha256,
                "key": item.key,
                "urls": item.urls,
            }
            for item in publication.variants
        ],
    }


@dg.asset(
    key=["media", "media_record"],
    freshness_policy=PUBLISHED_MEDIA_FRESHNESS,
    group_name="media",
    partitions_def=uploads_partitions,
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
    staging = objects.bucket(media_settings.staging_bucket)
    try:
        publication = decode_publication(
            staging.get(publication_manifest_key(media_settings, context.partition_key))
        )
    except ObjectNotFound as error:
        raise dg.Failure(
            f"upload partition '{context.partition_key}' has not been published; materialize media/published first"
        ) from error
    earlier = published_variants(database, context.partition_key)
    record_publication(
        database,
        PublicationRecord(
            partition_key=publication.partition_key,
            object_key=publication.object_key,
            sha256=publication.source_sha256,
            kind=publication.kind,
            mime=publication.mime,
            bytes_in=publication.bytes_in,
            bytes_out=publication.bytes_out,
            duration_seconds=publication.duration_seconds,
            regions=list(publication.region_buckets),
        ),
        [
            VariantRecord(
                label=item.variant.label,
                format=item.variant.format,
                kind=item.variant.kind,
                mime=item.variant.mime,
                key=item.key,
                width=item.variant.width,
                height=item.variant.height,
                bytes=item.variant.bytes,
                checksum=item.variant.sha256,
                urls=item.urls,
                encode_seconds=item.variant.encode_seconds,
                duration_seconds=item.variant.duration_seconds,
                active_content_removed=item.variant.active_content_removed,
            )
            for item in publication.variants
        ],
    )
    record_upload_outcome(database, context.partition_key, PUBLISHED, None)
    set_settled_original_aside(
        database, objects.bucket(settings.UPLOADS_BUCKET), originals_layout(), context.partition_key
    )
    invalidation_ids = _invalidate_replaced(context, database, cdn, publication, earlier)

    payload = announcement(publication)
    delivery_id = f"{publication.partition_key}@{publication.source_sha256[:16]}"
    try:
        delivery = webhook.deliver(PUBLISHED_EVENT, payload, delivery_id)
        webhook_status, attempts = "delivered", delivery.attempts
    except WebhookUndeliverable as error:
        context.log.error(f"webhook for {publication.object_key!r} dead-lettered: {error}")
        dead_letter(database, WEBHOOK_DEAD_LETTER_SOURCE, delivery_id, str(error), encode_payload(payload))
        webhook_status, attempts = "dead_lettered", 0
    return dg.MaterializeResult(
        metadata={
            "variants": len(publication.variants),
            "bytes_in": publication.bytes_in,
            "bytes_out": publication.bytes_out,
            "webhook": webhook_status,
            "webhook_attempts": attempts,
            "delivery_id": delivery_id,
            "replaced_upload": bool(invalidation_ids)
            or any(row["source_sha256"] != publication.source_sha256 for row in earlier),
            "cdn_invalidations": dg.MetadataValue.json(invalidation_ids),
        }
    )


def _invalidate_replaced(
    context: dg.AssetExecutionContext,
    database: SqlDatabase,
    cdn: Cdn,
    publication: PublicationManifest,
    earlier: list[dict[str, object]],
) -> list[str]:
    """Invalidate the old variant paths when this upload replaced earlier bytes under the same name."""
    replaced = [row for row in earlier if row["source_sha256"] != publication.source_sha256]
    if not replaced:
        return []
    current = {item.key for item in publication.variants}
    retired = sorted({str(row["key"]) for row in replaced} - current)
    retired = [
        key
        for key in retired
        if key not in keys_referenced_elsewhere(database, publication.partition_key, retired)
    ]
    if not retired:
        return []
    ids = cdn.invalidate(retired, caller_reference=f"{publication.partition_key}@{publication.source_sha256}")
    context.log.info(f"invalidated {len(retired)} replaced paths of {publication.object_key!r}: {ids}")
    return ids


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
