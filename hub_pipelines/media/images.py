"""Web renditions of one uploaded image: a square thumbnail and three widths, each as WebP, AVIF and JPEG.

Decisions worth knowing:

- Never upscale. A width rung wider than the source is dropped, except the first such rung, which is
  capped at the source width: a 1500 px upload yields small 480, medium 1024 and large 1500, so the
  full source resolution is always published and no two rungs have the same size. The thumbnail is a
  centred square of min(150, width, height) px, so a 1x1 upload still gets a (1x1) thumbnail.
- Animated GIF/WebP: the first frame becomes the still renditions. JPEG cannot animate, and motion
  belongs to the video pipeline; an animated WebP here would make AVIF and JPEG disagree.
- Colour: EXIF orientation applied, embedded ICC profiles converted to sRGB, then every piece of
  metadata (EXIF, XMP, ICC) dropped; untagged output is read as sRGB by browsers. CMYK and 16-bit
  sources become 8-bit sRGB; transparency is kept in WebP and AVIF and composited onto white for JPEG.
- Formats: whatever Pillow opens (JPEG, JPEG 2000, PNG/APNG, GIF, WebP, AVIF, TIFF, BMP) plus
  HEIF/HEIC through pillow-heif's opener (libheif applies the photo's rotation; its EXIF says so).
- Hostile bytes: Pillow's plugins raise many exception types on malformed input (struct.error,
  IndexError, ZeroDivisionError, ...), from `open` through `getexif` to `load`. Everything between
  receiving the bytes and holding a normalized image is therefore one guarded step that rejects with
  the exception's type and message; nothing else reaches the caller.
- Speed: JPEG sources are decoded at the smallest DCT scale that still covers the largest rung
  (`Image.draft`), each rung is resized from the previous, larger one with reduce-then-resample
  (`reducing_gap`), and the encodes run on a bounded thread pool (Pillow's encoders release the GIL).
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

register_heif_opener()

ImageFormat = Literal["webp", "avif", "jpeg"]

_MIME: dict[ImageFormat, str] = {"webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg"}
_ORIENTATIONS_THAT_SWAP_AXES = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_WHITE = (255, 255, 255)


class ImageRejected(ValueError):
    """The upload cannot be rendered: not an image, truncated, corrupt, or over the pixel limit."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"rejected image {name!r}: {reason}")


@dataclass(frozen=True)
class ImageVariantSpec:
    """Which renditions to make and how hard to compress them."""

    widths: Mapping[str, int] = field(default_factory=lambda: {"small": 480, "medium": 1024, "large": 2048})
    thumbnail_side: int = 150
    formats: tuple[ImageFormat, ...] = ("webp", "avif", "jpeg")
    quality: Mapping[ImageFormat, int] = field(default_factory=lambda: {"webp": 85, "avif": 85, "jpeg": 85})
    # aom speed 5 with one tile and perceptual delta-q: 0.596x/0.599x/0.597x JPEG's bytes at equal luma
    # SSIM 0.95 on three synthetic photos (speed 6: 0.620x/0.625x/0.622x; goal 0.60x, issue #4). It costs
    # ~6x speed 6's AVIF CPU (about 20 CPU-s instead of 3.4 per 12-MP upload) and matches pyvips at the
    # same effort (4): 0.85x its CPU for the variant set. Speed 4 leaves more margin (0.589x-0.592x) for
    # ~1.2x speed 5's CPU.
    avif_speed: int = 5
    # aom tuned for SSIM: 4-5% fewer bytes than its default PSNR tuning at equal SSIM, and no slower.
    avif_tune: str = "ssim"
    # libavif "advanced" key/values for aom. deltaq-mode 3 (perceptual, all-intra): 0.05-0.13% fewer
    # bytes at no measurable CPU; enable-qm, sharpness and min-partition-size cost bytes.
    avif_options: Mapping[str, str] = field(default_factory=lambda: {"deltaq-mode": "3"})
    # libavif tiles 1024+ px images automatically; one tile saves 0.2-0.4% bytes and no CPU.
    avif_autotiling: bool = False
    webp_method: int = 4
    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485
    max_workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    reducing_gap: float = 3.0


@dataclass(frozen=True)
class RenderedVariant:
    """One encoded rendition."""

    data: bytes
    mime: str
    format: ImageFormat
    label: str
    width: int
    height: int
    encode_seconds: float


def render_image_variants(
    data: bytes, name: str, spec: ImageVariantSpec | None = None
) -> list[RenderedVariant]:
    """Every rendition of `spec` for `data`: thumbnail first, then widest first, formats in spec order."""
    spec = spec or ImageVariantSpec()
    try:
        base, rungs, thumb_side = _decoded(data, name, spec)
    except ImageRejected:
        raise
    except Exception as exc:
        raise ImageRejected(name, f"not a decodable image: {type(exc).__name__}: {exc}") from exc
    sized = _resize_chain(base, rungs, spec.reducing_gap)
    sized.insert(0, ("thumbnail", _thumbnail(base, [image for _, image in sized], thumb_side)))

    jobs = [(label, image, fmt) for label, image in sized for fmt in spec.formats]
    # Largest first, so the slowest encodes are not the ones left alone at the end.
    by_cost = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].width * jobs[i][1].height)
    with ThreadPoolExecutor(max_workers=max(1, spec.max_workers), thread_name_prefix="encode") as pool:
        futures = {i: pool.submit(_encode, jobs[i][1], jobs[i][0], jobs[i][2], spec) for i in by_cost}
        return [futures[i].result() for i in range(len(jobs))]


def _decoded(
    data: bytes, name: str, spec: ImageVariantSpec
) -> tuple[Image.Image, list[tuple[str, int]], int]:
    """The normalized first frame, the width rungs it gets and its thumbnail's side."""
    source = _open_checked(data, name, spec.max_pixels)
    oriented_width, oriented_height = _oriented_size(source)
    rungs = plan_widths(oriented_width, spec.widths)
    thumb_side = min(spec.thumbnail_side, oriented_width, oriented_height)
    _draft_for(source, oriented_width, oriented_height, rungs, thumb_side)
    return _decode(source, name), rungs, thumb_side


def plan_widths(source_width: int, widths: Mapping[str, int]) -> list[tuple[str, int]]:
    """(label, width) per rung, widest first, with the no-upscale rule from the module docstring."""
    planned: list[tuple[str, int]] = []
    for label, width in sorted(widths.items(), key=lambda item: item[1]):
        if width < source_width:
            planned.append((label, width))
        else:
            planned.append((label, source_width))
            break
    return planned[::-1]


def header_limit_breach(source: str | os.PathLike[str], max_pixels: int) -> str | None:
    """Which pixel limit the image's header declares a size over, if any, read without decoding
    pixels. A file Pillow cannot identify breaches nothing here: the renderer rejects it."""
    try:
        with Image.open(source) as image:
            return _pixel_breach(*image.size, max_pixels)
    except Image.DecompressionBombError as exc:
        return f"decompression bomb guard: {exc}"
    except Exception:
        return None


def _pixel_breach(width: int, height: int, max_pixels: int) -> str | None:
    if width * height <= max_pixels:
        return None
    return (
        f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
        "(decompression bomb guard)"
    )


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejected(name, f"decompression bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message shows the BytesIO's repr, which says nothing about the upload.
        raise ImageRejected(name, "not a readable image: no image format recognised") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(name, f"not a readable image: {exc}") from exc
    width, height = image.size
    breach = _pixel_breach(width, height, max_pixels)
    if breach:
        raise ImageRejected(name, breach)
    if width < 1 or height < 1:
        raise ImageRejected(name, f"empty image {width}x{height}")
    return image


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    width, height = image.size
    return (height, width) if orientation in _ORIENTATIONS_THAT_SWAP_AXES else (width, height)


def _draft_for(
    image: Image.Image, width: int, height: int, rungs: list[tuple[str, int]], thumb_side: int
) -> None:
    if image.format != "JPEG":
        return
    largest = rungs[0][1] if rungs else 1
    scale = max(largest / width, thumb_side / min(width, height))
    if scale >= 1:
        return
    stored_width, stored_height = image.size
    image.draft(image.mode, (math.ceil(stored_width * scale), math.ceil(stored_height * scale)))


def _decode(image: Image.Image, name: str) -> Image.Image:
    """The first frame, upright, as 8-bit sRGB 'RGB' or 'RGBA', with no metadata left."""
    try:
        image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(name, f"truncated or corrupt image data: {exc}") from exc
    icc_profile = upright.info.get("icc_profile") or image.info.get("icc_profile")
    normalized = _to_srgb(_to_8bit(upright), icc_profile)
    if normalized.mode == "RGBA" and normalized.getchannel("A").getextrema() == (255, 255):
        normalized = normalized.convert("RGB")
    normalized.info = {}
    return normalized


def _to_8bit(image: Image.Image) -> Image.Image:
    """'L', 'RGB', 'RGBA' or 'CMYK' with 8 bits per channel."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's own conversion clips 16-bit values at 255 instead of scaling them.
        values = np.asarray(image, dtype=np.float64)
        peak = values.max(initial=0.0)
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
        return Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if image.mode in ("LA", "La", "RGBa"):
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("L", "RGB", "RGBA", "CMYK"):
        return image
    return image.convert("RGB")


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    colour = image.convert("RGB") if alpha is not None else image
    converted = _apply_profile(colour, icc_profile) if icc_profile else None
    if converted is None:
        converted = colour.convert("RGB")
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _apply_profile(image: Image.Image, icc_profile: bytes) -> Image.Image | None:
    """The image converted from its embedded profile to sRGB, or None when the profile is unusable."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if image.mode != "CMYK" and ImageCms.getProfileDescription(source).strip().startswith("sRGB"):
            return image.convert("RGB")
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        # A damaged or mismatched profile (e.g. an RGB profile on a CMYK image) is ignored rather than
        # failing the upload: the naive conversion is what most viewers would show anyway.
        return None


def _resize_chain(
    base: Image.Image, rungs: list[tuple[str, int]], reducing_gap: float
) -> list[tuple[str, Image.Image]]:
    sized: list[tuple[str, Image.Image]] = []
    current = base
    for label, width in rungs:
        height = max(1, round(base.height * width / base.width))
        if (width, height) != current.size:
            current = current.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
        sized.append((label, current))
    return sized


def _thumbnail(base: Image.Image, resized: list[Image.Image], side: int) -> Image.Image:
    # The smallest already-resized image that still covers the square keeps the crop cheap.
    candidates = [image for image in resized if min(image.size) >= side] + [base]
    source = min(candidates, key=lambda image: image.width * image.height)
    return ImageOps.fit(source, (side, side), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def encode_image(image: Image.Image, fmt: ImageFormat, quality: int, spec: ImageVariantSpec) -> bytes:
    """One resized image in one format, with the spec's encoder settings."""
    buffer = io.BytesIO()
    if fmt == "jpeg":
        _flatten_onto_white(image).save(buffer, "JPEG", quality=quality, progressive=True, optimize=True)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=quality, method=spec.webp_method)
    else:
        image.save(
            buffer,
            "AVIF",
            quality=quality,
            speed=spec.avif_speed,
            autotiling=spec.avif_autotiling,
            advanced={"tune": spec.avif_tune, **spec.avif_options},
        )
    return buffer.getvalue()


def _encode(image: Image.Image, label: str, fmt: ImageFormat, spec: ImageVariantSpec) -> RenderedVariant:
    started = time.perf_counter()
    data = encode_image(image, fmt, spec.quality.get(fmt, 85), spec)
    return RenderedVariant(
        data=data,
        mime=_MIME[fmt],
        format=fmt,
        label=label,
        width=image.width,
        height=image.height,
        encode_seconds=time.perf_counter() - started,
    )


def _flatten_onto_white(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image
    flattened = Image.new("RGB", image.size, _WHITE)
    flattened.paste(image, mask=image.getchannel("A"))
    return flattened
