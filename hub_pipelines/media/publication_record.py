"""The recording step as plain Python: a publication kept in SQL, the upload settled, the CDN told of
replaced paths, and subscribers told by a signed webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub_pipelines.core.ports import Cdn, SqlDatabase, Webhook
from hub_pipelines.landing.upload_records import PUBLISHED
from hub_pipelines.media.announcements import (
    PUBLISHED_EVENT,
    Announcement,
    announce,
    publication_announcement,
    publication_delivery_id,
)
from hub_pipelines.media.manifests import PublicationManifest
from hub_pipelines.media.originals import Originals
from hub_pipelines.media.records import (
    PublicationRecord,
    VariantRecord,
    keys_referenced_elsewhere,
    published_variants,
    record_publication,
)
from hub_pipelines.media.staging import Staging


@dataclass(frozen=True)
class RecordedPublication:
    publication: PublicationManifest
    replaced_upload: bool
    cdn_invalidations: list[str]
    announcement: Announcement


def record_published_upload(
    originals: Originals,
    staging: Staging,
    database: SqlDatabase,
    cdn: Cdn,
    webhook: Webhook,
    partition_key: str,
) -> RecordedPublication:
    """Record the upload's publication and settle it as published; raises StepBlocked before it is published."""
    publication = staging.publication(partition_key)
    earlier = published_variants(database, partition_key)
    record_publication(database, _publication_record(publication), _variant_records(publication))
    originals.settle(database, partition_key, PUBLISHED, None)
    invalidation_ids = invalidate_replaced(database, cdn, publication, earlier)
    announced = announce(
        webhook, database, PUBLISHED_EVENT, publication_announcement(publication),
        publication_delivery_id(publication),
    )  # fmt: skip
    replaced = bool(invalidation_ids) or any(
        row["source_sha256"] != publication.source_sha256 for row in earlier
    )
    return RecordedPublication(publication, replaced, invalidation_ids, announced)


def invalidate_replaced(
    database: SqlDatabase, cdn: Cdn, publication: PublicationManifest, earlier: list[dict[str, Any]]
) -> list[str]:
    """Invalidate the old variant paths when this upload replaced earlier bytes under the same name,
    except paths another upload still publishes."""
    replaced = [row for row in earlier if row["source_sha256"] != publication.source_sha256]
    if not replaced:
        return []
    current = {item.key for item in publication.variants}
    retired = sorted({str(row["key"]) for row in replaced} - current)
    shared = keys_referenced_elsewhere(database, publication.partition_key, retired)
    retired = [key for key in retired if key not in shared]
    if not retired:
        return []
    return cdn.invalidate(
        retired, caller_reference=f"{publication.partition_key}@{publication.source_sha256}"
    )


def _publication_record(publication: PublicationManifest) -> PublicationRecord:
    return PublicationRecord(
        partition_key=publication.partition_key,
        object_key=publication.object_key,
        sha256=publication.source_sha256,
        kind=publication.kind,
        mime=publication.mime,
        bytes_in=publication.bytes_in,
        bytes_out=publication.bytes_out,
        duration_seconds=publication.duration_seconds,
        regions=list(publication.region_buckets),
    )


def _variant_records(publication: PublicationManifest) -> list[VariantRecord]:
    return [
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
    ]
