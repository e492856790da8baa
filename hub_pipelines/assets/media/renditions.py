from typing import TYPE_CHECKING, Any

import dagster as dg

from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.assets.media.steps import originals, reported_as_failures, staging
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.core.ports import ObjectStorage, SqlDatabase
from hub_pipelines.deploy_k8s import TRANSCODE_STEP_TAGS
from hub_pipelines.media.manifests import StagingManifest
from hub_pipelines.media.printable import printable
from hub_pipelines.media.rendition_staging import stage_renditions
from hub_pipelines.resources.media.media_settings import MediaSettings

if TYPE_CHECKING:
    from hub_pipelines.media.rendering import Rendering

TRANSCODE_POOL = "transcode"


@dg.asset(
    key=["media", "renditions"],
    group_name="media",
    partitions_def=uploads_partitions,
    retry_policy=EXTERNAL_CALL_RETRY,
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
    with reported_as_failures(context):
        staged = stage_renditions(
            originals(objects),
            staging(objects, media_settings),
            database,
            context.partition_key,
            media_settings.render_settings(),
            media_settings.render_fingerprint(),
        )
    if staged.mismatch_warning:
        context.log.warning(staged.mismatch_warning)
    return dg.MaterializeResult(
        metadata=_metrics(staged.manifest, staged.rendering, staged.claimed_mime, staged.mime_mismatch)
    )


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
