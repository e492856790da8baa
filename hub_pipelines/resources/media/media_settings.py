"""Where the media workflow keeps things and how patient it is: buckets, regions, retries, quality.

A resource rather than module constants so each deployment (and each test) sets its own buckets,
fed by environment variables in `definitions.py`. The same settings serve local and production.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import dagster as dg

from hub_pipelines.core.retry import RetryPolicy

# The render settings' classes live beside PIL, PyAV and pikepdf: imported when settings are built.
if TYPE_CHECKING:
    from hub_pipelines.media.images import ImageFormat
    from hub_pipelines.media.rendering import RenderSettings
    from hub_pipelines.media.upload_limits import UploadLimits
    from hub_pipelines.media.video import VideoLimits

DEFAULT_REGIONS = {
    "us-east": "media-us-east",
    "eu-west": "media-eu-west",
    "ap-southeast": "media-ap-southeast",
}


class MediaSettings(dg.ConfigurableResource):
    """Buckets, regions and tunables of the media workflow.

    Defaults that mirror a domain class's own (AVIF speed, upload limits) are written out here, so the
    code location does not import the renderers; tests/media/test_media_settings.py holds them equal.
    """

    staging_bucket: str = "media-staging"
    staging_prefix: str = "staging/"
    quarantine_bucket: str = "media-quarantine"
    quarantine_prefix: str = ""
    origin_bucket: str = "media-origin"
    region_buckets: dict[str, str] = DEFAULT_REGIONS
    published_prefix: str = "media/"

    replication_concurrency: int = 8
    publish_attempts: int = 4
    scan_attempts: int = 3
    retry_initial_wait_seconds: float = 1.0
    retry_max_wait_seconds: float = 30.0

    image_quality: int = 85
    # aom speed for AVIF; the default's bytes/CPU trade-off is measured beside ImageVariantSpec.avif_speed.
    avif_speed: int = 5
    max_image_pixels: int = 89_478_485
    max_image_bytes: int = 100 << 20
    video_preset: str = "veryfast"
    max_video_seconds: float = 3 * 3600
    max_video_bytes: int = 4 << 30
    max_video_pixels: int = 8192 * 4320
    max_pdf_pages: int = 2_000
    max_pdf_bytes: int = 200 << 20
    pdf_downsample_dpi: int | None = None
    # "strip" publishes PDFs with their scripts, launch actions, embedded files, rich media and XFA
    # removed; "reject" refuses such PDFs instead (media.pdfs.ActiveContentPolicy).
    pdf_active_content: Literal["strip", "reject"] = "strip"

    def bucket_names(self) -> list[str]:
        """Every bucket the workflow writes, for bootstrap (`create_bucket` is idempotent)."""
        names = [
            self.staging_bucket,
            self.quarantine_bucket,
            self.origin_bucket,
            *self.region_buckets.values(),
        ]
        return list(dict.fromkeys(names))

    def retry_policy(self, attempts: int, retry_on: Sequence[Callable[[BaseException], bool]]) -> RetryPolicy:
        return RetryPolicy(
            attempts=attempts,
            initial_wait=self.retry_initial_wait_seconds,
            max_wait=self.retry_max_wait_seconds,
            jitter=self.retry_initial_wait_seconds,
            retry_on=tuple(retry_on),
        )

    def render_settings(self) -> RenderSettings:
        from hub_pipelines.media.images import ImageVariantSpec
        from hub_pipelines.media.rendering import RenderSettings
        from hub_pipelines.media.video import VideoSpec

        quality: dict[ImageFormat, int] = {
            "webp": self.image_quality,
            "avif": self.image_quality,
            "jpeg": self.image_quality,
        }
        return RenderSettings(
            images=ImageVariantSpec(
                quality=quality, avif_speed=self.avif_speed, max_pixels=self.max_image_pixels
            ),
            video=VideoSpec(preset=self.video_preset, limits=self.video_limits()),
            pdf_downsample_dpi=self.pdf_downsample_dpi,
            pdf_active_content=self.pdf_active_content,
        )

    def video_limits(self) -> VideoLimits:
        from hub_pipelines.media.video import VideoLimits

        return VideoLimits(
            max_duration_seconds=self.max_video_seconds,
            max_input_bytes=self.max_video_bytes,
            max_pixels=self.max_video_pixels,
        )

    def upload_limits(self) -> UploadLimits:
        """What `media/scan_verdict` holds an upload to before scanning it."""
        from hub_pipelines.media.upload_limits import UploadLimits

        return UploadLimits(
            max_image_pixels=self.max_image_pixels,
            max_image_bytes=self.max_image_bytes,
            video=self.video_limits(),
            max_pdf_pages=self.max_pdf_pages,
            max_pdf_bytes=self.max_pdf_bytes,
        )

    def render_fingerprint(self) -> str:
        """Changes whenever the renditions would: staged renditions are reused only for the same one."""
        from hub_pipelines.media.pdf_active_content import INERT_RULES_VERSION

        settings = self.render_settings()
        described = repr((dataclasses.replace(settings.images, max_workers=1), settings.video.ladder, settings.video.preset, settings.video.limits,
                          settings.video.keyframe_interval_seconds, settings.video.audio_bitrate,
                          settings.thumbnail_width, settings.still_quality, settings.pdf_downsample_dpi,
                          settings.pdf_active_content, INERT_RULES_VERSION))  # fmt: skip
        return hashlib.sha256(described.encode()).hexdigest()[:16]
