"""The virus-scan step as plain Python: an upload held to its size limits, scanned on its exact bytes,
and moved to quarantine when infected."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hub_pipelines.core.ports import ObjectStore, SqlDatabase, VirusScanner
from hub_pipelines.core.retry import RetryPolicy
from hub_pipelines.media.records import ScanRecord, record_scan
from hub_pipelines.media.upload_files import download_upload, file_chunks
from hub_pipelines.media.upload_limits import UploadLimits, check_upload_limits


@dataclass(frozen=True)
class ScannedUpload:
    record: ScanRecord
    scan_seconds: float


def scan_upload(
    uploads: ObjectStore,
    object_key: str,
    partition_key: str,
    claimed_mime: str | None,
    scanner: VirusScanner,
    limits: UploadLimits,
    retry: RetryPolicy,
) -> ScannedUpload:
    """The scanner's verdict on the upload's bytes, once their headers are within `limits`.

    The upload is copied to a local file once: the header checks and every scan attempt read it.
    Raises UploadOverLimit before the scanner is called, ScannerUnavailable when `retry` gives up; a
    size the scanner refuses is its verdict ("not scannable: limit ..."), quarantined like an infection.
    """
    with tempfile.TemporaryDirectory(prefix="hub-scan-") as folder:
        upload = download_upload(uploads, object_key, Path(folder) / "upload")
        check_upload_limits(upload.path, object_key, claimed_mime, limits)
        started = time.perf_counter()
        verdict = retry.call(lambda: scanner.scan(file_chunks(upload.path), object_key))
        seconds = time.perf_counter() - started
    record = ScanRecord(
        partition_key=partition_key,
        sha256=upload.sha256,
        object_key=object_key,
        clean=verdict.clean,
        signature=verdict.signature,
        scanner=verdict.scanner,
        scanned_bytes=verdict.scanned_bytes,
    )
    return ScannedUpload(record, seconds)


def quarantine_upload(
    uploads: ObjectStore, database: SqlDatabase, infected: ScanRecord, bucket: str, prefix: str
) -> ScanRecord:
    """Move the infected upload to `bucket` under `prefix` + its key and record where it went."""
    quarantine_key = prefix + infected.object_key
    uploads.copy(infected.object_key, quarantine_key, dest_bucket=bucket)
    uploads.delete(infected.object_key)
    quarantined = dataclasses.replace(infected, quarantine_key=quarantine_key)
    record_scan(database, quarantined)
    return quarantined
