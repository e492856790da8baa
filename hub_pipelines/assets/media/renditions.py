import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import originals_layout, uploads_partitions
from hub_pipelines.core.ports import ObjectNotFound, ObjectStorage, ObjectStore, SqlDatabase
from hub_pipelines.deploy_k8s import TRANSCODE_STEP_TAGS
from hub_pipelines.landing.upload_records import REJECTED, record_upload_outcome
from hub_pipelines.landing.upload_retention import set_settled_original_aside
from hub_pipelines.media.content_type import UnsupportedMediaType, detect_content_type
from hub_pipelines.media.manifests import StagedVariant, StagingManifest, decode_staging, encode
from hub_pipelines.media.printable import printable
from hub_pipelines.media.publishing import IMMUTABLE_CACHE_CONTROL, checksum_metadata
from hub_pipelines.media.records import ContentTypeRecord, record_content_type, scan_verdict_for
from hub_pipelines.media.upload_files import download_upload
from hub_pipelines.resources.media_settings import MediaSettings

if TYPE_CHECKING:
    from hub_pipelines.media.rendering import Rendering

TRANSCODE_POOL = "transcode"


def staging_manifest_key(media_settings: MediaSettings, partition_key: str) -> str:
    """Where the upload's current staging manifest is, for `media/published`."""
    return f"{media_settings.staging_prefix}{partition_key}/manifest.json"


def publication_manifest_key(media_settings: MediaSettings, partition_key: str) -> str:
    return f"{media_settings.staging_prefix}{partition_key}/publication.json"


@dg.asset(
    key=["media", "renditions"],
    group_name="media",
    partitions_def=uploads_partitions,
    deps=[dg.AssetKey(["media", "scan_verdict"])],
    kinds={"python", "s3", "sql"},
    pool=TRANSCODE_POOL,
    op_tags=TRANSCODE_STEP_TAGS,
)
@instrumented(records=1)
def renditions(
    context: dg.AssetExecutionContext,
    objects: dg.ResourceParam[ObjectStorage],
    database: dg.ResourceParam[SqlDatabase],
    media_settings: MediaSettings,
) -> dg.MaterializeResult:
    """The upload typed by its bytes and rendered for the web (image variants, video ladder, optimized PDF), staged."""
    layout = originals_layout()
    object_key = layout.arrived(context.partition_key)
    uploads = objects.bucket(settings.UPLOADS_BUCKET)
    staging = objects.bucket(media_settings.staging_bucket)
    found = layout.locate(uploads, context.partition_key)
    if found is None:
        raise dg.Failure(
            f"upload {object_key!r} is not in bucket '{settings.UPLOADS_BUCKET}': nothing to render"
        )
    source_key, info = found
    with tempfile.TemporaryDirectory(prefix="hub-render-") as folder:
        source = Path(folder) / "source"
        downloaded = download_upload(uploads, source_key, source)
        sha256 = downloaded.sha256
        verdict = scan_verdict_for(database, context.partition_key, sha256)
        if verdict is None or not verdict.clean:
            raise dg.Failure(
                f"refusing to render upload {object_key!r} (sha256 {sha256}): these bytes have no clean scan "
                "verdict; materialize media/scan_verdict for the partition first",
                allow_retries=False,
            )
        detected = detect_content_type(downloaded.head, info.content_type)
        record_content_type(
            database,
            ContentTypeRecord(
                context.partition_key,
                sha256,
                detected.kind,
                detected.mime,
                detected.claimed_mime,
                detected.mismatch,
            ),
        )
        if detected.mismatch:
            context.log.warning(
                f"upload {object_key!r} claims {printable(detected.claimed_mime or '')} but its bytes are {detected.mime}"
            )
        if detected.kind == "other":
            unsupported = UnsupportedMediaType(object_key, detected)
            record_upload_outcome(database, context.partition_key, REJECTED, printable(unsupported.reason))
            set_settled_original_aside(database, uploads, layout, context.partition_key)
            raise dg.Failure(printable(str(unsupported)), allow_retries=False)

        base = f"{media_settings.staging_prefix}{context.partition_key}/{sha256}/{media_settings.render_fingerprint()}"
        manifest = _reusable(staging, f"{base}/manifest.json")
        rendering: Rendering | None = None
        if manifest is None:
            # Rendering loads PIL, PyAV and pikepdf: a run that renders imports them, the code location not.
            from hub_pipelines.media.rendering import UploadRejected, render_upload

            try:
                rendering = render_upload(
                    source, detected.kind, object_key, Path(folder) / "out", media_settings.render_settings()
                )
            except UploadRejected as error:
                record_upload_outcome(database, context.partition_key, REJECTED, printable(error.reason))
                set_settled_original_aside(database, uploads, layout, context.partition_key)
                raise dg.Failure(printable(str(error)), allow_retries=False) from error
            manifest = _stage(staging, base, rendering, context.partition_key, object_key, sha256, detected.kind,
                              detected.mime)  # fmt: skip
    staging.put(staging_manifest_key(media_settings, context.partition_key), encode(manifest),
                content_type="application/json")  # fmt: skip
    return dg.MaterializeResult(
        metadata=_metrics(manifest, rendering, detected.claimed_mime, detected.mismatch)
    )


def _reusable(staging: ObjectStore, manifest_key: str) -> StagingManifest | None:
    """The renditions staged earlier for these exact bytes and settings, when all of them are still there.

    Reusing them makes a re-run publish the same content-addressed keys even where an encoder
    (x264 with threads) does not produce identical bytes twice.
    """
    try:
        manifest = decode_staging(staging.get(manifest_key))
    except ObjectNotFound:
        return None
    for variant in manifest.variants:
        info = staging.head(variant.staged_key)
        if info is None or info.size != variant.bytes:
            return None
    return manifest


def _stage(
    staging: ObjectStore,
    base: str,
    rendering: "Rendering",
    partition_key: str,
    object_key: str,
    sha256: str,
    kind: str,
    mime: str,
) -> StagingManifest:
    variants = []
    for file in rendering.files:
        digest = hashlib.sha256(file.data).hexdigest()
        staged_key = f"{base}/{file.label}-{file.format}{file.extension}"
        # Staged with the final headers and checksum metadata: publishing copies server-side and
        # the copies keep them.
        staging.put(staged_key, file.data, content_type=file.mime, cache_control=IMMUTABLE_CACHE_CONTROL,
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
    staging.put(f"{base}/manifest.json", encode(manifest), content_type="application/json")
    return manifest


def _metrics(
    manifest: StagingManifest, rendering: "Rendering | None", claimed: str | None, mismatch: bool
) -> dict[str, Any]:
    largest = max((variant.bytes for variant in manifest.variants), default=0)
    metadata: dict[str, Any] = {
        "kind": manifest.kind,
        "detected_mime": manifest.mime,
        "claimed_mime": printable(claimed or ""),
        "mime_mismatch": mismatch,
        "sha256": manifest.source_sha256,
        "variants": len(manifest.variants),
        "bytes_in": manifest.bytes_in,
        "bytes_out": manifest.bytes_out,
        "largest_variant_savings_pct": round(100 * (1 - largest / manifest.bytes_in), 2)
        if manifest.bytes_in
        else 0.0,
        "encode_seconds_per_rung": dg.MetadataValue.json(
            {f"{v.label}.{v.format}": round(v.encode_seconds, 4) for v in manifest.variants}
        ),
        "reused_staged_renditions": rendering is None,
    }
    if rendering is not None:
        metadata["render_seconds"] = round(rendering.wall_seconds, 4)
        if rendering.realtime_factor is not None:
            metadata["realtime_factor"] = round(rendering.realtime_factor, 3)
    elif manifest.duration_seconds:
        walls = [v.encode_seconds for v in manifest.variants if v.kind == "video"]
        if walls:
            metadata["realtime_factor"] = round(manifest.duration_seconds / max(walls), 3)
    if manifest.duration_seconds:
        metadata["duration_seconds"] = round(manifest.duration_seconds, 3)
    removed = [v.active_content_removed for v in manifest.variants if v.active_content_removed is not None]
    if removed:
        metadata["active_content_removed"] = dg.MetadataValue.json(removed[0])
    return metadata
