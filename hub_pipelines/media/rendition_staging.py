"""The rendering step as plain Python: an upload with a clean verdict typed by its bytes, rendered for
the web and staged, or rejected naming why."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.landing.upload_records import REJECTED
from hub_pipelines.media.content_type import UnsupportedMediaType, classify_upload
from hub_pipelines.media.manifests import StagingManifest
from hub_pipelines.media.originals import Originals
from hub_pipelines.media.printable import printable
from hub_pipelines.media.records import ContentTypeRecord, record_content_type, scan_verdict_for
from hub_pipelines.media.staging import Staging
from hub_pipelines.media.step_failures import StepBlocked, StepRefused
from hub_pipelines.media.upload_files import download_upload

if TYPE_CHECKING:
    from hub_pipelines.media.rendering import Rendering, RenderSettings


@dataclass(frozen=True)
class StagedRenditions:
    manifest: StagingManifest
    # None when renditions staged earlier for the same bytes and settings were reused.
    rendering: Rendering | None
    claimed_mime: str | None
    mime_mismatch: bool

    @property
    def mismatch_warning(self) -> str | None:
        """What to warn an operator of when the uploader claimed another type than the bytes are."""
        if not self.mime_mismatch:
            return None
        return (
            f"upload {self.manifest.object_key!r} claims {printable(self.claimed_mime or '')} but its bytes "
            f"are {self.manifest.mime}"
        )


def stage_renditions(
    originals: Originals,
    staging: Staging,
    database: SqlDatabase,
    partition_key: str,
    render_settings: RenderSettings,
    render_fingerprint: str,
) -> StagedRenditions:
    """Render the upload (or reuse what was staged for its bytes and settings) and point the upload's
    staging manifest at it.

    Raises StepRefused when the bytes have no clean verdict, or when they are of no supported type or a
    renderer refuses them (both settle the upload as rejected); StepBlocked when the upload is missing.
    """
    object_key = originals.arrived(partition_key)
    found = originals.locate(partition_key)
    if found is None:
        raise StepBlocked(f"upload {object_key!r} is not in bucket '{originals.bucket}': nothing to render")
    source_key, info = found
    with tempfile.TemporaryDirectory(prefix="hub-render-") as folder:
        source = Path(folder) / "source"
        downloaded = download_upload(originals.store, source_key, source)
        sha256 = downloaded.sha256
        verdict = scan_verdict_for(database, partition_key, sha256)
        if verdict is None or not verdict.clean:
            raise StepRefused(
                f"refusing to render upload {object_key!r} (sha256 {sha256}): these bytes have no clean scan "
                "verdict; materialize media/scan_verdict for the partition first"
            )
        unsupported: UnsupportedMediaType | None = None
        try:
            detected = classify_upload(downloaded.head, object_key, info.content_type)
        except UnsupportedMediaType as refused:
            detected, unsupported = refused.detected, refused
        # Recorded whatever the type: an unsupported upload's row says what its bytes were.
        record_content_type(
            database,
            ContentTypeRecord(
                partition_key, sha256, detected.kind, detected.mime, detected.claimed_mime, detected.mismatch
            ),
        )
        if unsupported is not None:
            originals.settle(database, partition_key, REJECTED, unsupported.reason)
            raise StepRefused(printable(str(unsupported)))

        renditions_folder = staging.renditions_folder(partition_key, sha256, render_fingerprint)
        manifest = staging.reusable(renditions_folder)
        rendering: Rendering | None = None
        if manifest is None:
            # Rendering loads PIL, PyAV and pikepdf: a run that renders imports them, the code location not.
            from hub_pipelines.media.rendering import UploadRejected, render_upload

            try:
                rendering = render_upload(
                    source, detected.kind, object_key, Path(folder) / "out", render_settings
                )
            except UploadRejected as error:
                originals.settle(database, partition_key, REJECTED, error.reason)
                raise StepRefused(printable(str(error))) from error
            manifest = staging.stage(renditions_folder, rendering, partition_key, object_key, sha256,
                                     detected.kind, detected.mime)  # fmt: skip
    staging.put_manifest(staging.manifest_key(partition_key), manifest)
    return StagedRenditions(manifest, rendering, detected.claimed_mime, detected.mismatch)
