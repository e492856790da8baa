import dagster as dg

from hub_pipelines.assets.instrumented import instrumented, step_metrics
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.assets.media.steps import originals, reported_as_failures
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.core.ops_metrics import record_quarantine
from hub_pipelines.core.ports import ObjectStorage, SqlDatabase, VirusScanner, Webhook
from hub_pipelines.resources.media.media_settings import MediaSettings


@dg.asset(
    key=["media", "scan_verdict"],
    group_name="media",
    partitions_def=uploads_partitions,
    retry_policy=EXTERNAL_CALL_RETRY,
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
    # The header checks load PIL, PyAV and pikepdf: a run that scans imports them, the code location not.
    from hub_pipelines.media.scanning import Quarantine, scanner_unavailable, screen_upload

    with reported_as_failures(context):
        scanned = screen_upload(
            originals(objects),
            database,
            scanner,
            webhook,
            context.partition_key,
            media_settings.upload_limits(),
            media_settings.retry_policy(media_settings.scan_attempts, [scanner_unavailable]),
            Quarantine(media_settings.quarantine_bucket, media_settings.quarantine_prefix),
            count_quarantined=lambda held: record_quarantine(step_metrics(), held),
        )
    record, seconds = scanned.record, scanned.scan_seconds
    size = record.scanned_bytes
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
