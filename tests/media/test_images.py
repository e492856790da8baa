"""Image renditions over a generated corpus of the cases uploads really contain."""

from __future__ import annotations

import io
import resource

import numpy as np
import pytest
import pyvips  # a dev dependency; its built-in CMYK and Display P3 profiles make real tagged files
from PIL import Image

from hub_pipelines.media.images import (
    ImageRejected,
    ImageVariantSpec,
    RenderedVariant,
    plan_widths,
    render_image_variants,
)
from tests.media.corpus import encode, photo_like, png_header_only

WIDTHS = {"small": 480, "medium": 1024, "large": 2048}


def decoded(variant: RenderedVariant) -> Image.Image:
    image = Image.open(io.BytesIO(variant.data))
    image.load()
    return image


def pixel(image: Image.Image, xy: tuple[int, int], mode: str = "RGB") -> tuple[int, ...]:
    value = image.convert(mode).getpixel(xy)
    assert isinstance(value, tuple)
    return value


def by_key(variants: list[RenderedVariant]) -> dict[tuple[str, str], RenderedVariant]:
    return {(v.label, v.format): v for v in variants}


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCamera"
    exif[0x0110] = "Model X"
    return encode(photo_like(1200, 800), "JPEG", quality=92, exif=exif.tobytes())


@pytest.fixture(scope="module")
def photo_variants(photo_jpeg: bytes) -> list[RenderedVariant]:
    return render_image_variants(photo_jpeg, "photo.jpg")


def test_widths_wider_than_source_collapse_into_one_rung_at_source_width() -> None:
    assert plan_widths(1500, WIDTHS) == [("large", 1500), ("medium", 1024), ("small", 480)]
    assert plan_widths(1024, WIDTHS) == [("medium", 1024), ("small", 480)]
    assert plan_widths(4000, WIDTHS) == [("large", 2048), ("medium", 1024), ("small", 480)]
    assert plan_widths(1, WIDTHS) == [("small", 1)]


def test_photo_gets_every_rung_in_every_format_with_correct_mime(
    photo_variants: list[RenderedVariant],
) -> None:
    variants = by_key(photo_variants)
    expected_sizes = {
        "thumbnail": (150, 150),
        "small": (480, 320),
        "medium": (1024, 683),
        "large": (1200, 800),
    }
    assert set(variants) == {(label, fmt) for label in expected_sizes for fmt in ("webp", "avif", "jpeg")}
    for (label, fmt), variant in variants.items():
        image = decoded(variant)
        assert (variant.width, variant.height) == expected_sizes[label] == image.size
        assert image.format == fmt.upper()
        assert variant.mime == f"image/{fmt}"


def test_outputs_are_never_larger_than_the_source(photo_variants: list[RenderedVariant]) -> None:
    assert all(v.width <= 1200 and v.height <= 800 for v in photo_variants)


def test_outputs_carry_no_exif_icc_or_xmp(photo_jpeg: bytes, photo_variants: list[RenderedVariant]) -> None:
    assert Image.open(io.BytesIO(photo_jpeg)).getexif()[0x010F] == "TestCamera"
    for variant in photo_variants:
        image = decoded(variant)
        assert not image.getexif(), (variant.label, variant.format)
        assert not {"exif", "icc_profile", "xmp"} & set(image.info), (variant.label, variant.format)
        assert b"TestCamera" not in variant.data


def test_jpeg_outputs_are_progressive(photo_variants: list[RenderedVariant]) -> None:
    jpegs = [v for v in photo_variants if v.format == "jpeg"]
    assert len(jpegs) == 4
    assert all(decoded(v).info.get("progressive") for v in jpegs)


def test_exif_orientation_6_swaps_dimensions_and_rotates_content() -> None:
    stored = Image.new("RGB", (600, 400), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 60, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    variants = by_key(render_image_variants(encode(stored, "JPEG", exif=exif.tobytes()), "rotated.jpg"))
    small = decoded(variants[("small", "webp")])
    assert small.size == (400, 600)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored top-left lands top-right.
    red, _green, blue = pixel(small, (395, 5))
    assert red > 200 and blue < 60


def test_cmyk_jpeg_with_icc_profile_becomes_srgb() -> None:
    red = (
        pyvips.Image.black(64, 64, bands=3)
        .linear([1, 1, 1], [220, 30, 30])
        .cast("uchar")
        .copy(interpretation="srgb")
    )
    cmyk_jpeg = red.icc_transform("cmyk", input_profile="srgb").jpegsave_buffer(Q=95)
    assert Image.open(io.BytesIO(cmyk_jpeg)).mode == "CMYK"
    for variant in render_image_variants(cmyk_jpeg, "print.jpg"):
        r, g, b = pixel(decoded(variant), (10, 10))
        assert r > 170 and g < 80 and b < 80, (variant.label, variant.format, (r, g, b))


def test_cmyk_jpeg_without_profile_is_converted() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))
    variant = by_key(render_image_variants(encode(cmyk, "JPEG"), "plain-cmyk.jpg"))[("small", "jpeg")]
    image = decoded(variant)
    assert image.mode == "RGB"
    r, g, b = pixel(image, (20, 20))
    assert r > 200 and g < 50 and b < 50


def test_display_p3_pixels_are_converted_to_srgb_not_reinterpreted() -> None:
    srgb = (
        pyvips.Image.black(32, 32, bands=3)
        .linear([1, 1, 1], [10, 200, 30])
        .cast("uchar")
        .copy(interpretation="srgb")
    )
    p3_png = srgb.icc_transform("p3", input_profile="srgb").pngsave_buffer()
    stored_red = pixel(Image.open(io.BytesIO(p3_png)), (0, 0))[0]
    assert stored_red > 60
    variant = by_key(render_image_variants(p3_png, "wide-gamut.png"))[("small", "webp")]
    r, g, b = pixel(decoded(variant), (16, 16))
    assert abs(r - 10) <= 8 and abs(g - 200) <= 8 and abs(b - 30) <= 8


def test_16_bit_grayscale_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256), (64, 1)).astype(np.uint16)
    sixteen_bit = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(sixteen_bit)).mode == "I;16"
    image = decoded(by_key(render_image_variants(sixteen_bit, "scan.png"))[("small", "webp")]).convert("L")
    row = np.asarray(image)[32]
    assert row[5] < 20 and 100 < row[128] < 156 and row[250] > 235


def test_palette_png_with_transparency_is_white_in_jpeg_and_transparent_in_webp_and_avif() -> None:
    palette = Image.new("P", (200, 200), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.paste(1, (50, 50, 150, 150))
    png = encode(palette, "PNG", transparency=0)
    variants = by_key(render_image_variants(png, "logo.png"))
    jpeg_corner = pixel(decoded(variants[("small", "jpeg")]), (2, 2))
    assert min(jpeg_corner) >= 245
    for fmt in ("webp", "avif"):
        image = decoded(variants[("small", fmt)])
        assert pixel(image, (2, 2), "RGBA")[3] == 0, fmt
        assert pixel(image, (100, 100), "RGBA")[3] == 255, fmt


def test_animated_gif_renders_its_first_frame_as_stills() -> None:
    frames = [Image.new("RGB", (120, 90), colour) for colour in ((0, 200, 0), (200, 0, 0), (0, 0, 200))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(gif)), "n_frames", 1) == 3
    for variant in render_image_variants(gif, "dance.gif"):
        image = decoded(variant)
        assert getattr(image, "n_frames", 1) == 1
        r, g, b = pixel(image, (image.width // 2, image.height // 2))
        assert g > 150 and r < 60 and b < 60, (variant.label, variant.format)


def test_one_pixel_image_still_gets_a_thumbnail_without_upscaling() -> None:
    variants = by_key(render_image_variants(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "dot.png"))
    assert set(variants) == {
        (label, fmt) for label in ("thumbnail", "small") for fmt in ("webp", "avif", "jpeg")
    }
    assert all(decoded(v).size == (1, 1) for v in variants.values())


def test_thumbnail_of_a_panorama_is_a_centred_square_cropped_to_fill() -> None:
    panorama = Image.new("RGB", (900, 200), (0, 0, 255))
    panorama.paste((0, 255, 0), (350, 0, 550, 200))
    thumbnail = decoded(
        by_key(render_image_variants(encode(panorama, "PNG"), "pano.png"))[("thumbnail", "webp")]
    )
    assert thumbnail.size == (150, 150)
    _r, g, b = pixel(thumbnail, (5, 75))
    assert g > 200 and b < 60


def test_decompression_bomb_header_is_rejected_without_decoding() -> None:
    bomb = png_header_only(20000, 20000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageRejected) as raised:
        render_image_variants(bomb, "bomb.png")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert "bomb.png" in str(raised.value) and "400000000" in str(raised.value)
    assert peak_after - peak_before < 100_000  # KiB: decoding would need 1.2 GB
    assert raised.value.name == "bomb.png"


def test_configured_pixel_limit_names_the_dimensions() -> None:
    with pytest.raises(ImageRejected, match=r"'big.png'.*300x300 = 90000 pixels exceeds the limit of 50000"):
        render_image_variants(
            encode(Image.new("RGB", (300, 300)), "PNG"), "big.png", ImageVariantSpec(max_pixels=50_000)
        )


def test_truncated_jpeg_is_rejected_with_a_clear_error(photo_jpeg: bytes) -> None:
    with pytest.raises(ImageRejected, match=r"'cut.jpg'.*truncated"):
        render_image_variants(photo_jpeg[: len(photo_jpeg) // 2], "cut.jpg")


def test_text_named_jpg_is_rejected_as_not_an_image() -> None:
    with pytest.raises(ImageRejected, match=r"'notes.jpg'.*not a readable image"):
        render_image_variants(b"just some notes\n" * 20, "notes.jpg")


def test_quality_is_configurable_per_format(photo_jpeg: bytes) -> None:
    spec = ImageVariantSpec(widths={"small": 480}, formats=("jpeg",), quality={"jpeg": 40})
    low = by_key(render_image_variants(photo_jpeg, "photo.jpg", spec))[("small", "jpeg")]
    default_quality = ImageVariantSpec(widths={"small": 480}, formats=("jpeg",))
    high = by_key(render_image_variants(photo_jpeg, "photo.jpg", default_quality))[("small", "jpeg")]
    assert len(low.data) < len(high.data) * 0.7


def test_jpeg_decoded_at_reduced_dct_scale_still_yields_exact_rung_sizes() -> None:
    wide = Image.new("RGB", (4200, 700), (0, 0, 255))
    wide.paste((255, 0, 0), (4000, 0, 4200, 700))
    source = Image.open(io.BytesIO(encode(wide, "JPEG")))
    source.draft("RGB", (2048, 342))
    assert source.size == (2100, 350)  # the scale the renderer asks for: half size still covers 2048
    variants = by_key(render_image_variants(encode(wide, "JPEG"), "banner.jpg"))
    assert decoded(variants[("large", "jpeg")]).size == (2048, 341)
    assert decoded(variants[("small", "jpeg")]).size == (480, 80)
    red, _green, blue = pixel(decoded(variants[("large", "webp")]), (2040, 170))
    assert red > 200 and blue < 60
