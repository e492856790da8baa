"""What one step of the media workflow hands the next, kept as JSON beside the staged files.

Steps may run in different processes (or be re-run alone in a backfill), so they pass no Python
objects: `media/renditions` writes a `StagingManifest` next to the files it staged, `media/published`
reads it and writes a `PublicationManifest`, which `media/media_record` and the checks read.
"""

from __future__ import annotations

import msgspec


class StagedVariant(msgspec.Struct, frozen=True, kw_only=True):
    """One rendered file in the staging area, with the checksums publishing verifies against."""

    label: str
    format: str
    kind: str
    mime: str
    extension: str
    width: int
    height: int
    bytes: int
    sha256: str
    md5: str
    staged_key: str
    encode_seconds: float
    duration_seconds: float | None = None
    # Set for PDFs: active content removed per category ({} when there was none).
    active_content_removed: dict[str, int] | None = None


class UploadManifest(msgspec.Struct, frozen=True, kw_only=True):
    """The upload a manifest is about: what both steps' manifests say of their source."""

    partition_key: str
    object_key: str
    source_sha256: str
    kind: str
    mime: str
    bytes_in: int
    duration_seconds: float | None


class StagingManifest(UploadManifest, frozen=True, kw_only=True):
    variants: list[StagedVariant]

    @property
    def bytes_out(self) -> int:
        return sum(variant.bytes for variant in self.variants)


class PublishedVariant(msgspec.Struct, frozen=True, kw_only=True):
    """A variant under its content-addressed key, verified in the origin and every region."""

    variant: StagedVariant
    key: str
    urls: dict[str, str]


class PublicationManifest(UploadManifest, frozen=True, kw_only=True):
    origin_bucket: str
    region_buckets: dict[str, str]
    variants: list[PublishedVariant]

    @property
    def bytes_out(self) -> int:
        return sum(published.variant.bytes for published in self.variants)


def encode(manifest: StagingManifest | PublicationManifest) -> bytes:
    return msgspec.json.encode(manifest)


def decode_staging(data: bytes) -> StagingManifest:
    return msgspec.json.decode(data, type=StagingManifest)


def decode_publication(data: bytes) -> PublicationManifest:
    return msgspec.json.decode(data, type=PublicationManifest)
