"""Signed webhooks announcing what happened to an upload, dead-lettered when they cannot be delivered.

An undeliverable announcement never fails the step: it is kept in `dead_letters` (source
`media_webhook`) with the reason and the exact body, to be replayed by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hub_pipelines.core.ports import SqlDatabase, Webhook, WebhookUndeliverable
from hub_pipelines.core.webhook_signing import encode_payload
from hub_pipelines.media.manifests import PublicationManifest
from hub_pipelines.media.records import ScanRecord, dead_letter

PUBLISHED_EVENT = "media.published"
QUARANTINE_EVENT = "media.upload.quarantined"
WEBHOOK_DEAD_LETTER_SOURCE = "media_webhook"


@dataclass(frozen=True)
class Announcement:
    delivery_id: str
    status: Literal["delivered", "dead_lettered"]
    attempts: int
    error: str | None = None


def announce(
    webhook: Webhook, database: SqlDatabase, event: str, payload: Mapping[str, Any], delivery_id: str
) -> Announcement:
    """Deliver one event; an undeliverable one is dead-lettered with its body instead."""
    try:
        delivery = webhook.deliver(event, payload, delivery_id)
    except WebhookUndeliverable as error:
        dead_letter(database, WEBHOOK_DEAD_LETTER_SOURCE, delivery_id, str(error), encode_payload(payload))
        return Announcement(delivery_id, "dead_lettered", 0, str(error))
    return Announcement(delivery_id, "delivered", delivery.attempts)


def publication_announcement(publication: PublicationManifest) -> dict[str, object]:
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


def publication_delivery_id(publication: PublicationManifest) -> str:
    return f"{publication.partition_key}@{publication.source_sha256[:16]}"


def quarantine_announcement(record: ScanRecord, quarantine_bucket: str) -> dict[str, object]:
    return {
        "event": QUARANTINE_EVENT,
        "upload": {
            "partition_key": record.partition_key,
            "object_key": record.object_key,
            "sha256": record.sha256,
        },
        "signature": record.signature,
        "quarantine": {"bucket": quarantine_bucket, "key": record.quarantine_key},
    }


def quarantine_delivery_id(record: ScanRecord) -> str:
    return f"quarantine:{record.partition_key}@{record.sha256[:16]}"
