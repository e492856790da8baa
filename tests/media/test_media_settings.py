"""MediaSettings defaults agree with the render specs they feed (the resource names them without
importing the imaging libraries at definition time)."""

from __future__ import annotations

from hub_pipelines.media.images import ImageVariantSpec
from hub_pipelines.resources.media_settings import MediaSettings


def test_media_settings_avif_speed_default_is_the_image_specs() -> None:
    assert MediaSettings().avif_speed == ImageVariantSpec().avif_speed


def test_render_settings_carry_the_configured_quality_speed_and_pixel_limit() -> None:
    images = (
        MediaSettings(image_quality=70, avif_speed=6, max_image_pixels=1_000_000).render_settings().images
    )

    assert dict(images.quality) == {"webp": 70, "avif": 70, "jpeg": 70}
    assert images.avif_speed == 6
    assert images.max_pixels == 1_000_000
