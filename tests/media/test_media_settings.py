"""MediaSettings defaults agree with the render specs they feed (the resource names them without
importing the imaging libraries at definition time)."""

from __future__ import annotations

from typing import get_args

from hub_pipelines.media.images import ImageVariantSpec
from hub_pipelines.media.pdfs import ActiveContentPolicy
from hub_pipelines.media.upload_limits import UploadLimits
from hub_pipelines.media.video import VideoLimits
from hub_pipelines.resources.media.media_settings import MediaSettings


def test_media_settings_avif_speed_default_is_the_image_specs() -> None:
    assert MediaSettings().avif_speed == ImageVariantSpec().avif_speed


def test_media_settings_upload_limit_defaults_are_the_domains() -> None:
    settings = MediaSettings()

    assert settings.upload_limits() == UploadLimits()
    assert settings.max_video_pixels == VideoLimits().max_pixels
    assert set(get_args(MediaSettings.model_fields["pdf_active_content"].annotation)) == set(
        get_args(ActiveContentPolicy)
    )


def test_render_settings_carry_the_configured_quality_speed_and_pixel_limit() -> None:
    images = (
        MediaSettings(image_quality=70, avif_speed=6, max_image_pixels=1_000_000).render_settings().images
    )

    assert dict(images.quality) == {"webp": 70, "avif": 70, "jpeg": 70}
    assert images.avif_speed == 6
    assert images.max_pixels == 1_000_000
