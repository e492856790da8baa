"""The virus-scan step as plain Python: an upload held to its size limits, scanned on its exact bytes,
and moved to quarantine when infected.

The header checks load PIL, PyAV and pikepdf: the scan asset imports this module when it runs.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hub_pipelines.core.ports import (
    ObjectStore,
    ScannerUnavailable,
    SqlDatabase,
    VirusScanner,
    Webhook,
    rejection_reason,
)
from hub_pipelines.core.retry import RetryPolicy
from hub_pipelines.landing.upload_records import LANDED, QUARANTINED, REJECTED, record_upload_outcome
from hub_pipelines.media.announcements import (
    QUARANTINE_EVENT,
    announce,
    quarantine_announcement,
    quarantine_delivery_id,
)
from hub_pipelines.media.originals import Originals
from hub_pipelines.media.printable import printable
from hub_pipelines.media.records import (
    ScanRecord,
    infected_verdict_for,
    quarantined_uploads,
    record_scan,
)
from hub_pipelines.media.step_failures import StepBlocked, StepRefused
from hub_pipelines.media.upload_files import download_upload, file_chunks
from hub_pipelines.media.upload_limits import UploadLimits, UploadOverLimit, check_upload_limits


@dataclass(frozen=True)
class ScannedUpload:
    record: ScanRecord
    scan_seconds: float


@dataclass(frozen=True)
class Quarantine:
    bucket: str
    prefix: str


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


def screen_upload(
    originals: Originals,
    database: SqlDatabase,
    scanner: VirusScanner,
    webhook: Webhook,
    partition_key: str,
    limits: UploadLimits,
    retry: RetryPolicy,
    quarantine: Quarantine,
    count_quarantined: Callable[[dict[str, int]], None],
) -> ScannedUpload:
    """The scan step: held to `limits`, scanned, then recorded clean, or quarantined and announced.

    Raises StepRefused for an upload quarantined now or by an earlier run, or over a limit (settled as
    rejected); StepBlocked when the upload is missing or the scanner stayed unavailable. After a scan,
    `count_quarantined` is given the uploads held in quarantine, by reason.
    """
    object_key = originals.arrived(partition_key)
    found = originals.locate(partition_key)
    if found is None:
        earlier = infected_verdict_for(database, partition_key)
        if earlier is not None:
            record_upload_outcome(
                database, partition_key, QUARANTINED, printable(rejection_reason(earlier.signature))
            )
            raise _rejected(object_key, earlier.signature)
        raise StepBlocked(f"upload {object_key!r} is not in bucket '{originals.bucket}': nothing to scan")
    source_key, info = found
    try:
        scanned = scan_upload(
            originals.store, source_key, partition_key, info.content_type, scanner, limits, retry
        )
    except UploadOverLimit as error:
        originals.settle(database, partition_key, REJECTED, f"{error.kind} over a limit: {error.reason}")
        raise StepRefused(
            printable(str(error)), {"object_key": printable(object_key), "limit": printable(error.reason)}
        ) from error
    except ScannerUnavailable as error:
        raise StepBlocked(
            f"could not scan upload {object_key!r}: scanner unavailable after "
            f"{retry.attempts} tries: {error}; nothing is published unscanned"
        ) from error
    record = scanned.record
    if record.clean:
        record_scan(database, record)
        # Clean bytes are in the pipeline again, whatever an earlier run of the partition ended in.
        record_upload_outcome(database, partition_key, LANDED, None)
        count_quarantined(quarantined_uploads(database))
        return scanned
    quarantined = quarantine_upload(originals.store, database, record, quarantine.bucket, quarantine.prefix)
    record_upload_outcome(database, partition_key, QUARANTINED, printable(rejection_reason(record.signature)))
    announced = announce(
        webhook, database, QUARANTINE_EVENT, quarantine_announcement(quarantined, quarantine.bucket),
        quarantine_delivery_id(quarantined),
    )  # fmt: skip
    refusal = _rejected(object_key, record.signature)
    refusal.metadata["quarantine"] = printable(f"{quarantine.bucket}/{quarantined.quarantine_key}")
    refusal.metadata["webhook"] = announced.status
    count_quarantined(quarantined_uploads(database))
    raise refusal


def _rejected(object_key: str, signature: str | None) -> StepRefused:
    return StepRefused(
        f"rejected upload {object_key!r}: {printable(rejection_reason(signature))}",
        {"object_key": printable(object_key), "signature": printable(signature or "")},
    )


def scanner_unavailable(error: BaseException) -> bool:
    """What the scan's retry policy retries: only a scanner that could not be reached or timed out."""
    return isinstance(error, ScannerUnavailable)
