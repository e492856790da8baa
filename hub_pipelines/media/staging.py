"""The staging area between the media steps: where each manifest is kept, and the renditions staged there.

Every key of the staging bucket is laid out here, so no step builds another step's keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub_pipelines.core.ports import ObjectNotFound, ObjectStore
from hub_pipelines.media.manifests import (
    PublicationManifest,
    StagedVariant,
    StagingManifest,
    decode_publication,
    decode_staging,
    encode,
)
from hub_pipelines.media.publishing import IMMUTABLE_CACHE_CONTROL, checksum_metadata
from hub_pipelines.media.step_failures import StepBlocked

if TYPE_CHECKING:
    from hub_pipelines.media.rendering import Rendering


@dataclass(frozen=True)
class Staging:
    """The staging bucket and the prefix every staged key starts with."""

    store: ObjectStore
    prefix: str

    def manifest_key(self, partition_key: str) -> str:
        """The upload's current staging manifest, which `media/published` reads."""
        return f"{self.prefix}{partition_key}/manifest.json"

    def publication_key(self, partition_key: str) -> str:
        return f"{self.prefix}{partition_key}/publication.json"

    def renditions_folder(self, partition_key: str, sha256: str, render_fingerprint: str) -> str:
        """Renditions of these exact bytes under these exact settings."""
        return f"{self.prefix}{partition_key}/{sha256}/{render_fingerprint}"

    def staged(self, partition_key: str) -> StagingManifest:
        data = self._written_by_earlier_step(
            self.manifest_key(partition_key),
            partition_key,
            "has no staged renditions; materialize media/renditions first",
        )
        return decode_staging(data)

    def publication(self, partition_key: str) -> PublicationManifest:
        data = self._written_by_earlier_step(
            self.publication_key(partition_key),
            partition_key,
            "has not been published; materialize media/published first",
        )
        return decode_publication(data)

    def _written_by_earlier_step(self, key: str, partition_key: str, missing: str) -> bytes:
        try:
            return self.store.get(key)
        except ObjectNotFound as error:
            raise StepBlocked(f"upload partition '{partition_key}' {missing}") from error

    def put_manifest(self, key: str, manifest: StagingManifest | PublicationManifest) -> None:
        self.store.put(key, encode(manifest), content_type="application/json")

    def reusable(self, folder: str) -> StagingManifest | None:
        """The renditions staged earlier in `folder`, when all of them are still there.

        Reusing them makes a re-run publish the same content-addressed keys even where an encoder
        (x264 with threads) does not produce identical bytes twice.
        """
        try:
            manifest = decode_staging(self.store.get(f"{folder}/manifest.json"))
        except ObjectNotFound:
            return None
        for variant in manifest.variants:
            info = self.store.head(variant.staged_key)
            if info is None or info.size != variant.bytes:
                return None
        return manifest

    def stage(
        self,
        folder: str,
        rendering: Rendering,
        partition_key: str,
        object_key: str,
        sha256: str,
        kind: str,
        mime: str,
    ) -> StagingManifest:
        """Stage every rendered file of the upload in `folder`, and its manifest beside them."""
        variants = []
        for file in rendering.files:
            digest = hashlib.sha256(file.data).hexdigest()
            staged_key = f"{folder}/{file.label}-{file.format}{file.extension}"
            # Staged with the final headers and checksum metadata: publishing copies server-side and
            # the copies keep them.
            self.store.put(staged_key, file.data, content_type=file.mime, cache_control=IMMUTABLE_CACHE_CONTROL,
                           metadata=checksum_metadata(digest))  # fmt: skip
            variants.append(
                StagedVariant(
                    label=file.label,
                    format=file.format,
                    kind=file.kind,
                    mime=file.mime,
                    extension=file.extension,
                    width=file.width,
                    height=file.height,
                    bytes=len(file.data),
                    sha256=digest,
                    md5=hashlib.md5(file.data, usedforsecurity=False).hexdigest(),
                    staged_key=staged_key,
                    encode_seconds=file.encode_seconds,
                    duration_seconds=file.duration_seconds,
                    active_content_removed=(
                        dict(file.active_content_removed) if file.active_content_removed is not None else None
                    ),
                )
            )
        manifest = StagingManifest(
            partition_key=partition_key,
            object_key=object_key,
            source_sha256=sha256,
            kind=kind,
            mime=mime,
            bytes_in=rendering.source_bytes,
            duration_seconds=rendering.duration_seconds,
            variants=variants,
        )
        self.put_manifest(f"{folder}/manifest.json", manifest)
        return manifest
