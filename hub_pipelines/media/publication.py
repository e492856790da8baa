"""The publishing step as plain Python: staged renditions placed under content-addressed keys in the
origin and every region, verified, with their CDN URLs kept in the publication manifest."""

from __future__ import annotations

from dataclasses import dataclass

from hub_pipelines.core.ports import Cdn, ObjectStorage, SqlDatabase
from hub_pipelines.core.retry import RetryPolicy
from hub_pipelines.media.manifests import PublicationManifest, PublishedVariant
from hub_pipelines.media.printable import printable
from hub_pipelines.media.publishing import (
    ORIGIN,
    PublishFailed,
    PublishReport,
    content_key,
    copy_matches,
    publish_staged,
)
from hub_pipelines.media.records import scan_verdict_for
from hub_pipelines.media.staging import Staging
from hub_pipelines.media.step_failures import StepRefused


@dataclass(frozen=True)
class Destinations:
    """Where published variants go: the origin bucket, a bucket per region, the keys' prefix."""

    origin_bucket: str
    region_buckets: dict[str, str]
    key_prefix: str


@dataclass(frozen=True)
class Publication:
    manifest: PublicationManifest
    report: PublishReport


def publish_upload(
    objects: ObjectStorage,
    staging: Staging,
    database: SqlDatabase,
    cdn: Cdn,
    destinations: Destinations,
    partition_key: str,
    policy: RetryPolicy,
    max_concurrency: int,
) -> Publication:
    """Publish the upload's staged renditions, only for bytes with a clean verdict; all or nothing.

    Raises StepBlocked when nothing is staged yet, StepRefused when the staged bytes have no clean
    verdict or a copy cannot be placed and verified.
    """
    staged = staging.staged(partition_key)
    verdict = scan_verdict_for(database, partition_key, staged.source_sha256)
    if verdict is None or not verdict.clean:
        raise StepRefused(
            f"refusing to publish upload {staged.object_key!r} (sha256 {staged.source_sha256}): "
            "no clean scan verdict for these bytes"
        )
    regions = list(destinations.region_buckets)
    try:
        report = publish_staged(
            staged.object_key,
            staged.variants,
            staging.store,
            objects.bucket(destinations.origin_bucket),
            {region: objects.bucket(bucket) for region, bucket in destinations.region_buckets.items()},
            key_prefix=destinations.key_prefix,
            policy=policy,
            max_concurrency=max_concurrency,
        )
    except PublishFailed as error:
        raise StepRefused(printable(str(error))) from error
    variants = []
    for variant in staged.variants:
        key = content_key(variant.sha256, variant.extension, destinations.key_prefix)
        variants.append(PublishedVariant(variant=variant, key=key, urls=cdn.urls_for(key, regions)))
    manifest = PublicationManifest(
        partition_key=staged.partition_key,
        object_key=staged.object_key,
        source_sha256=staged.source_sha256,
        kind=staged.kind,
        mime=staged.mime,
        bytes_in=staged.bytes_in,
        duration_seconds=staged.duration_seconds,
        origin_bucket=destinations.origin_bucket,
        region_buckets=dict(destinations.region_buckets),
        variants=variants,
    )
    staging.put_manifest(staging.publication_key(partition_key), manifest)
    return Publication(manifest, report)


@dataclass(frozen=True)
class CopiesCheck:
    checked: int
    missing_or_wrong: list[str]


def check_published_copies(objects: ObjectStorage, staging: Staging, partition_key: str) -> CopiesCheck:
    """Every published variant's copy in the origin and each region, held to its checksum.

    Raises StepBlocked when the upload has no publication.
    """
    publication = staging.publication(partition_key)
    buckets = {ORIGIN: publication.origin_bucket, **publication.region_buckets}
    wrong = [
        f"{where}/{item.key}"
        for item in publication.variants
        for where, bucket in buckets.items()
        if not copy_matches(objects.bucket(bucket), item.key, item.variant)
    ]
    return CopiesCheck(len(publication.variants) * len(buckets), wrong)
