import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented, step_metrics
from hub_pipelines.assets.media.partitions import originals_layout, uploads_partitions
from hub_pipelines.core.ops_metrics import record_quarantine
from hub_pipelines.core.ports import (
    ObjectStorage,
    ScannerUnavailable,
    SqlDatabase,
    VirusScanner,
    rejection_reason,
)
from hub_pipelines.landing.upload_records import LANDED, QUARANTINED, REJECTED, record_upload_outcome
from hub_pipelines.landing.upload_retention import set_settled_original_aside
from hub_pipelines.media.printable import printable
from hub_pipelines.media.records import (
    ScanRecord,
    dead_letter,
    infected_verdict_for,
    quarantined_uploads,
    record_scan,
)
from hub_pipelines.resources.media_settings import MediaSettings
from hub_pipelines.resources.webhook import Webhook, WebhookUndeliverable, encode_payload

QUARANTINE_EVENT = "media.upload.quarantined"


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, ScannerUnavailable)


def _record_outcome(database: SqlDatabase, partition_key: str, status: str, reason: str) -> None:
    record_upload_outcome(database, partition_key, status, printable(reason))


def _rejected(object_key: str, signature: str | None) -> dg.Failure:
    return dg.Failure(
        description=f"rejected upload {object_key!r}: {printable(rejection_reason(signature))}",
        metadata={"object_key": printable(object_key), "signature": printable(signature or "")},
        allow_retries=False,
    )


@dg.asset(
    key=["media", "scan_verdict"],
    group_name="media",
    partitions_def=uploads_partitions,
    deps=[dg.AssetKey(["media", "uploads"])],
    kinds={"s3", "sql", "clamav"},
)
@instrumented(records=1)
def scan_verdict(
    context: dg.AssetExecutionContext,
    objects: dg.ResourceParam[ObjectStorage],
    database: dg.ResourceParam[SqlDatabase],
    scanner: dg.ResourceParam[VirusScanner],
    webhook: dg.ResourceParam[Webhook],
    media_settings: MediaSettings,
) -> dg.MaterializeResult:
    """ClamAV's verdict on the upload's exact bytes, after cheap header checks reject bombs; an
    infected upload is quarantined and goes no further."""
    layout = originals_layout()
    object_key = layout.arrived(context.partition_key)
    uploads = objects.bucket(settings.UPLOADS_BUCKET)
    found = layout.locate(uploads, context.partition_key)
    if found is None:
        earlier = infected_verdict_for(database, context.partition_key)
        if earlier is not None:
            _record_outcome(database, context.partition_key, QUARANTINED, rejection_reason(earlier.signature))
            raise _rejected(object_key, earlier.signature)
        raise dg.Failure(
            f"upload {object_key!r} is not in bucket '{settings.UPLOADS_BUCKET}': nothing to scan"
        )
    source_key, info = found

    # The header checks load PIL, PyAV and pikepdf: a run that scans imports them, the code location not.
    from hub_pipelines.media.scanning import quarantine_upload, scan_upload
    from hub_pipelines.media.upload_limits import UploadOverLimit

    policy = media_settings.retry_policy(media_settings.scan_attempts, [_unavailable])
    try:
        scanned = scan_upload(uploads, source_key, context.partition_key, info.content_type, scanner,
                              media_settings.upload_limits(), policy)  # fmt: skip
    except UploadOverLimit as error:
        _record_outcome(
            database, context.partition_key, REJECTED, f"{error.kind} over a limit: {error.reason}"
        )
        set_settled_original_aside(database, uploads, layout, context.partition_key)
        reason = printable(str(error))
        context.log.error(reason)
        raise dg.Failure(
            reason,
            metadata={"object_key": printable(object_key), "limit": printable(error.reason)},
            allow_retries=False,
        ) from error
    except ScannerUnavailable as error:
        raise dg.Failure(
            f"could not scan upload {object_key!r}: scanner unavailable after "
            f"{media_settings.scan_attempts} tries: {error}; nothing is published unscanned"
        ) from error
    record = scanned.record
    if not record.clean:
        bucket = media_settings.quarantine_bucket
        quarantined = quarantine_upload(uploads, database, record, bucket, media_settings.quarantine_prefix)
        context.log.error(
            f"quarantined upload {object_key!r} (sha256 {record.sha256}) as "
            f"{printable(f'{bucket}/{quarantined.quarantine_key}')}: {printable(record.signature or '')}"
        )
        _record_outcome(database, context.partition_key, QUARANTINED, rejection_reason(record.signature))
        _alert(context, database, webhook, record, bucket, str(quarantined.quarantine_key))
        record_quarantine(step_metrics(), quarantined_uploads(database))
        raise _rejected(object_key, record.signature)
    record_scan(database, record)
    # Clean bytes are in the pipeline again, whatever an earlier run of the partition ended in.
    record_upload_outcome(database, context.partition_key, LANDED, None)
    record_quarantine(step_metrics(), quarantined_uploads(database))
    seconds, size = scanned.scan_seconds, record.scanned_bytes
    return dg.MaterializeResult(
        metadata={
            "verdict": "clean",
            "scanner": record.scanner,
            "sha256": record.sha256,
            "bytes_in": size,
            "scan_seconds": round(seconds, 4),
            "scan_mb_per_s": round(size / seconds / 1e6, 2) if seconds else 0.0,
        }
    )


def _alert(
    context: dg.AssetExecutionContext,
    database: SqlDatabase,
    webhook: Webhook,
    record: ScanRecord,
    quarantine_bucket: str,
    quarantine_key: str,
) -> None:
    payload = {
        "event": QUARANTINE_EVENT,
        "upload": {
            "partition_key": record.partition_key,
            "object_key": record.object_key,
            "sha256": record.sha256,
        },
        "signature": record.signature,
        "quarantine": {"bucket": quarantine_bucket, "key": quarantine_key},
    }
    delivery_id = f"quarantine:{record.partition_key}@{record.sha256[:16]}"
    try:
        webhook.deliver(QUARANTINE_EVENT, payload, delivery_id)
    except WebhookUndeliverable as error:
        context.log.error(f"quarantine alert for {record.object_key!r} dead-lettered: {error}")
        dead_letter(database, "media_webhook", delivery_id, str(error), encode_payload(payload))
