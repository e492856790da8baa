import hashlib
import time
from collections.abc import Iterator

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented, step_metrics
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.core.ops_metrics import record_quarantine
from hub_pipelines.core.ports import (
    ObjectStorage,
    ScannerUnavailable,
    SqlDatabase,
    VirusScanner,
    rejection_reason,
)
from hub_pipelines.landing.uploads import object_key_for
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


def _rejected(object_key: str, signature: str | None) -> dg.Failure:
    return dg.Failure(
        description=f"rejected upload '{object_key}': {rejection_reason(signature)}",
        metadata={"object_key": object_key, "signature": signature or ""},
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
    """ClamAV's verdict on the upload's exact bytes; an infected upload is quarantined and goes no further."""
    object_key = object_key_for(context.partition_key, settings.UPLOADS_PREFIX)
    uploads = objects.bucket(settings.UPLOADS_BUCKET)
    if uploads.head(object_key) is None:
        earlier = infected_verdict_for(database, context.partition_key)
        if earlier is not None:
            raise _rejected(object_key, earlier.signature)
        raise dg.Failure(
            f"upload '{object_key}' is not in bucket '{settings.UPLOADS_BUCKET}': nothing to scan"
        )

    scanned: dict[str, object] = {}

    def scan_once() -> tuple[bool, str | None, str]:
        digest = hashlib.sha256()

        def hashed(chunks: Iterator[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk

        verdict = scanner.scan(hashed(uploads.stream(object_key)), object_key)
        scanned["bytes"] = verdict.scanned_bytes
        scanned["scanner"] = verdict.scanner
        return verdict.clean, verdict.signature, digest.hexdigest()

    policy = media_settings.retry_policy(media_settings.scan_attempts, [_unavailable])
    started = time.perf_counter()
    try:
        clean, signature, sha256 = policy.call(scan_once)
    except ScannerUnavailable as error:
        raise dg.Failure(
            f"could not scan upload '{object_key}': scanner unavailable after "
            f"{media_settings.scan_attempts} tries: {error}; nothing is published unscanned"
        ) from error
    seconds = time.perf_counter() - started
    size = int(scanned["bytes"])  # type: ignore[call-overload]
    record = ScanRecord(
        partition_key=context.partition_key,
        sha256=sha256,
        object_key=object_key,
        clean=clean,
        signature=signature,
        scanner=str(scanned["scanner"]),
        scanned_bytes=size,
    )
    if not clean:
        quarantine_key = media_settings.quarantine_prefix + object_key
        uploads.copy(object_key, quarantine_key, dest_bucket=media_settings.quarantine_bucket)
        uploads.delete(object_key)
        record_scan(database, ScanRecord(**{**record.__dict__, "quarantine_key": quarantine_key}))
        context.log.error(
            f"quarantined upload '{object_key}' (sha256 {sha256}) as "
            f"{media_settings.quarantine_bucket}/{quarantine_key}: {signature}"
        )
        _alert(context, database, webhook, record, media_settings.quarantine_bucket, quarantine_key)
        record_quarantine(step_metrics(), {"infected": quarantined_uploads(database)})
        raise _rejected(object_key, signature)
    record_scan(database, record)
    record_quarantine(step_metrics(), {"infected": quarantined_uploads(database)})
    return dg.MaterializeResult(
        metadata={
            "verdict": "clean",
            "scanner": record.scanner,
            "sha256": sha256,
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
        context.log.error(f"quarantine alert for '{record.object_key}' dead-lettered: {error}")
        dead_letter(database, "media_webhook", delivery_id, str(error), encode_payload(payload))
