"""Publishing staged variants: content-addressed keys, the origin bucket first, then every region.

A variant's key is the sha256 of its bytes, so a key never changes meaning and is served with
`Cache-Control: public, max-age=31536000, immutable`; publishing the same bytes twice is a no-op.
Bytes never pass through the worker: the staged object (written with its final content type,
cache policy and checksum metadata) is copied server-side into the origin bucket, and from there
into each regional bucket, a bounded number of copies at a time.

Every copy is verified before it counts: its size and its ETag against the MD5 of the staged bytes
(S3 and SSE-S3 give a single-part object the MD5 of its plaintext as ETag); where the ETag is not an
MD5 (multipart uploads, SSE-KMS) the copy is read back and its sha256 compared. A failed or
mismatching copy is retried with backoff; when one is still failing after the last try the whole
publication fails, naming every copy that did, so nothing downstream records a partial upload.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hub_pipelines.core.ports import ObjectInfo, ObjectStore
from hub_pipelines.core.retry import RetryableError, RetryPolicy
from hub_pipelines.media.manifests import StagedVariant

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
ORIGIN = "origin"

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_RETRYABLE_S3_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "RequestTimeTooSkewed",
    }
)


class PublishFailed(RuntimeError):
    """At least one copy of one variant could not be placed and verified after every retry."""

    def __init__(self, upload: str, failures: Sequence[tuple[str, str, BaseException]]) -> None:
        self.upload = upload
        self.failures = list(failures)
        shown = "; ".join(
            f"{where} {key}: {type(error).__name__}: {error}" for where, key, error in failures[:5]
        )
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(
            f"publish of upload {upload!r} failed, nothing recorded: "
            f"{len(failures)} copies not verified: {shown}{more}"
        )


class ChecksumMismatch(RetryableError):
    """A copy's size or checksum differs from the staged bytes."""


def content_key(sha256: str, extension: str, prefix: str = "") -> str:
    """The immutable key of bytes with this sha256: `<prefix>ab/abcdef….webp`.

    The two-character fan-out keeps listings and S3's per-prefix request rates spread out.
    """
    return f"{prefix}{sha256[:2]}/{sha256}{extension}"


def checksum_metadata(sha256: str) -> dict[str, str]:
    return {"sha256": sha256}


def transient_storage_error(error: BaseException) -> bool:
    """Lost connections, timeouts, throttling and 5xx answers: the same copy may succeed next time."""
    # botocore is imported when an error is judged, not with the code location: local storage is folders.
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.response.get("Error", {}).get("Code", ""))
        return status >= 500 or code in _RETRYABLE_S3_CODES
    return isinstance(error, BotoConnectionError | HTTPClientError | ConnectionError | TimeoutError)


def copy_matches(
    store: ObjectStore, key: str, variant: StagedVariant, info: ObjectInfo | None = None
) -> bool:
    """True when `key` in `store` holds exactly the variant's bytes."""
    info = info if info is not None else store.head(key)
    if info is None or info.size != variant.bytes:
        return False
    etag = info.etag.strip('"').lower()
    if _PLAIN_MD5.match(etag):
        return etag == variant.md5
    digest = hashlib.sha256()
    for chunk in store.stream(key):
        digest.update(chunk)
    return digest.hexdigest() == variant.sha256


@dataclass(frozen=True)
class PlacedCopy:
    where: str
    key: str
    bytes: int
    copied: bool
    seconds: float


@dataclass(frozen=True)
class PublishReport:
    """Every copy placed: in the origin and in each region, copied now or already there."""

    copies: list[PlacedCopy]
    origin_seconds: float
    replication_seconds: float

    @property
    def bytes_replicated(self) -> int:
        return sum(copy.bytes for copy in self.copies if copy.where != ORIGIN)

    @property
    def copies_made(self) -> int:
        return sum(copy.copied for copy in self.copies)


def publish_staged(
    upload: str,
    variants: Sequence[StagedVariant],
    staging: ObjectStore,
    origin: ObjectStore,
    regions: Mapping[str, ObjectStore],
    *,
    key_prefix: str = "",
    policy: RetryPolicy | None = None,
    max_concurrency: int = 8,
) -> PublishReport:
    """Copy every staged variant to `origin` under its content key, then to every region; all verified.

    Raises PublishFailed when any copy is still missing or wrong after the policy's last try.
    """
    policy = policy or RetryPolicy(retry_on=(transient_storage_error,))
    workers = max(1, max_concurrency)
    keyed = [(variant, content_key(variant.sha256, variant.extension, key_prefix)) for variant in variants]

    started = time.perf_counter()
    origin_jobs = [(ORIGIN, staging, variant.staged_key, origin, key, variant) for variant, key in keyed]
    placed = _place_all(upload, origin_jobs, policy, workers)
    origin_seconds = time.perf_counter() - started

    started = time.perf_counter()
    region_jobs = [
        (region, origin, key, store, key, variant)
        for variant, key in keyed
        for region, store in regions.items()
    ]
    placed += _place_all(upload, region_jobs, policy, workers)
    return PublishReport(placed, origin_seconds, time.perf_counter() - started)


_Job = tuple[str, ObjectStore, str, ObjectStore, str, StagedVariant]


def _place_all(upload: str, jobs: Sequence[_Job], policy: RetryPolicy, workers: int) -> list[PlacedCopy]:
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publish") as pool:
        futures = [(job, pool.submit(_place_retried, policy, job)) for job in jobs]
        placed: list[PlacedCopy] = []
        failures: list[tuple[str, str, BaseException]] = []
        for job, future in futures:
            try:
                placed.append(future.result())
            except Exception as error:
                failures.append((f"{job[0]} ({job[3].bucket})", job[4], error))
    if failures:
        raise PublishFailed(upload, failures)
    return placed


def _place_retried(policy: RetryPolicy, job: _Job) -> PlacedCopy:
    return policy.call(_place, *job)


def _place(
    where: str, source: ObjectStore, source_key: str, target: ObjectStore, key: str, variant: StagedVariant
) -> PlacedCopy:
    started = time.perf_counter()
    if copy_matches(target, key, variant):
        return PlacedCopy(where, key, variant.bytes, False, time.perf_counter() - started)
    info = source.copy(source_key, key, dest_bucket=target.bucket)
    # The storage answers a copy with a fresh HEAD of the new object, so its size and ETag are the copy's.
    if not copy_matches(target, key, variant, info):
        raise ChecksumMismatch(
            f"copy of {key} in bucket '{target.bucket}' does not match the staged bytes "
            f"(size {info.size}, etag {info.etag}; expected {variant.bytes} bytes, md5 {variant.md5})"
        )
    return PlacedCopy(where, key, variant.bytes, True, time.perf_counter() - started)
