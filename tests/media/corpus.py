"""Media files the tests generate instead of shipping: each one exercises one awkward real-world case."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients, soft colour blobs and grain: compresses like a photo, unlike flat colour or pure noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    blobs = np.stack(
        [
            np.asarray(
                Image.fromarray(rng.normal(0, 1, (6, 8)).astype(np.float32), "F").resize(
                    (width, height), Image.Resampling.BICUBIC
                )
            )
            for _ in range(3)
        ],
        axis=-1,
    )
    pixels = (
        90 + 80 * y * np.array([0.4, 0.7, 1.0]) + 50 * x + 30 * blobs + rng.normal(0, 4, (height, width, 3))
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but which carries almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def small_picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    return photo_like(width, height, seed)


def animated(fmt: str, frames: int = 4, **options: object) -> bytes:
    """An animated GIF, WebP or PNG (APNG) of `frames` different frames."""
    pictures = [small_picture(seed=seed) for seed in range(frames)]
    return encode(
        pictures[0], fmt, save_all=True, append_images=pictures[1:], duration=100, loop=0, **options
    )


def exotic_images() -> dict[str, bytes]:
    """One small valid file per image format a user might upload, keyed by a file name."""
    picture = small_picture()
    return {
        "photo.jpg": encode(picture, "JPEG", quality=90),
        "diagram.png": encode(picture, "PNG"),
        "scan.tiff": encode(picture, "TIFF", compression="tiff_lzw"),
        "legacy.bmp": encode(picture, "BMP"),
        "favicon.ico": encode(picture, "ICO", sizes=[(32, 32)]),
        "camera.jp2": encode(picture, "JPEG2000"),
        "codestream.j2k": encode(picture, "JPEG2000", no_jp2=True),
        "iphone.heic": encode(picture, "HEIF"),
        "modern.avif": encode(picture, "AVIF", quality=60),
        "still.webp": encode(picture, "WEBP"),
        "still.gif": encode(picture.convert("P"), "GIF"),
        "moving.gif": animated("GIF"),
        "moving.webp": animated("WEBP"),
        "moving.png": animated("PNG"),
    }


def simple_pdf(pages: int = 1) -> bytes:
    import pikepdf

    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page()
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def truncations(data: bytes, cuts: int = 8) -> list[bytes]:
    """`data` cut at `cuts` points spread over its length (never whole, never empty)."""
    points = sorted({max(1, len(data) * i // (cuts + 1)) for i in range(1, cuts + 1)})
    return [data[:point] for point in points if point < len(data)]


def corrupted(data: bytes, seed: int = 0, flips: int = 8) -> bytes:
    """`data` with `flips` bytes past its signature overwritten at random."""
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    start = min(16, len(data) - 1)
    for position in rng.integers(start, len(data), size=flips):
        damaged[position] = int(rng.integers(0, 256))
    return bytes(damaged)


def zero_png(width: int, height: int) -> bytes:
    """A real 8-bit greyscale PNG of width x height black pixels, compressed row by row so that
    building it never holds the decoded image (20000x20000 is 400 MB decoded, ~389 KB encoded)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)
    rows = 1000
    block = row * rows
    parts = [compressor.compress(block) for _ in range(height // rows)]
    parts.append(compressor.compress(row * (height % rows)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
