"""Image variants: our Pillow pipeline beside pyvips on the same 12-megapixel photo, and codec efficiency.

Two measurements, in one run:

1. Time for the full variant set (thumbnail 150x150 crop + widths 480/1024/2048, each as WebP, AVIF and
   progressive JPEG at quality 85) made by `render_image_variants` and by pyvips with the same settings
   (JPEG Q85 progressive + optimized Huffman, WebP Q85 effort 4, AVIF Q85 with aom at our default speed,
   5, which is libvips effort 4; ours tunes aom for SSIM as libheif does by default, and adds its other
   `ImageVariantSpec` AVIF options, which pyvips does not expose). Runs alternate between the two so
   that load from other processes hits both alike; the median of each is compared. Goal: ours <= 1.5x
   pyvips.
2. Bytes of WebP and AVIF beside JPEG at equal SSIM. For each format the Pillow quality is searched so
   that the luma SSIM against the resized original reaches the target; bytes are interpolated to the
   exact target between the two qualities that bracket it. Goals: AVIF <= 0.6x, WebP <= 0.75x JPEG.

The goals are stated at SSIM 0.95; 0.90 and 0.97 are printed beside it to show how the ratios move.

Run: `uv run python bench/media_images.py [--repeat 3] [--ssim-width 1024] [--target-ssim 0.95 0.90 0.97]`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pyvips
from PIL import Image, ImageDraw, ImageFilter

from hub_pipelines.media.images import ImageFormat, ImageVariantSpec, encode_image, render_image_variants

RUNGS = {"large": 2048, "medium": 1024, "small": 480}
QUALITY = 85
AVIF_SPEED = ImageVariantSpec().avif_speed


def photo_like_jpeg(width: int = 4000, height: int = 3000, seed: int = 0) -> bytes:
    """Gradients, translucent shapes with soft edges, multi-scale texture and grain, saved as JPEG q92."""
    rng = np.random.default_rng(seed)

    def octave(cells: int, channels: int) -> np.ndarray:
        small = rng.normal(0, 1, (max(2, cells * height // width), cells, channels)).astype(np.float32)
        layers = [
            np.asarray(Image.fromarray(small[..., c], "F").resize((width, height), Image.Resampling.BICUBIC))
            for c in range(channels)
        ]
        return np.stack(layers, axis=-1)

    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    base = 110 + octave(4, 3) * 30 + 70 * y * np.array([0.5, 0.7, 1.0], np.float32) - 40 * x
    canvas = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(40):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx, ry = (int(v) for v in rng.integers(width // 60, width // 10, 2))
        fill = (*(int(v) for v in rng.integers(30, 220, 3)), int(rng.integers(90, 200)))
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    canvas = Image.alpha_composite(canvas, overlay).convert("RGB").filter(ImageFilter.GaussianBlur(1.5))
    grain = rng.normal(0, 2.5, (height, width, 1)).astype(np.float32)
    texture = octave(24, 1) * 14 + octave(160, 1) * 9 + octave(1000, 1) * 6 + grain
    photo = Image.fromarray(np.clip(np.asarray(canvas, np.float32) + texture, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def ours(data: bytes) -> list[tuple[str, str, int, int, int]]:
    spec = ImageVariantSpec(widths=RUNGS, avif_speed=AVIF_SPEED)
    return [
        (v.label, v.format, v.width, v.height, len(v.data))
        for v in render_image_variants(data, "bench.jpg", spec)
    ]


def with_pyvips(data: bytes) -> list[tuple[str, str, int, int, int]]:
    outputs = []
    rungs = [("thumbnail", 150), *RUNGS.items()]
    for label, width in rungs:
        if label == "thumbnail":
            image = pyvips.Image.thumbnail_buffer(data, width, height=width, crop="centre", size="down")
        else:
            image = pyvips.Image.thumbnail_buffer(data, width, height=10_000_000, size="down")
        # Decode and resize once per rung, as ours does, rather than once per format.
        image = image.copy_memory()
        encoded = {
            "webp": image.webpsave_buffer(Q=QUALITY, effort=4, keep="none"),
            "avif": image.heifsave_buffer(
                Q=QUALITY, compression="av1", encoder="aom", effort=9 - AVIF_SPEED, keep="none"
            ),
            "jpeg": image.jpegsave_buffer(Q=QUALITY, interlace=True, optimize_coding=True, keep="none"),
        }
        outputs += [(label, fmt, image.width, image.height, len(blob)) for fmt, blob in encoded.items()]
    return outputs


def timed(run: Callable[[bytes], list[tuple[str, str, int, int, int]]], data: bytes) -> tuple[float, list]:
    started = time.perf_counter()
    result = run(data)
    return time.perf_counter() - started, result


def luma(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def _gaussian_filter(plane: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """'valid' separable convolution, by summing shifted slices (11 taps: fast enough in numpy)."""
    n = len(taps)
    rows = sum(taps[i] * plane[i : plane.shape[0] - n + 1 + i, :] for i in range(n))
    return sum(taps[i] * rows[:, i : rows.shape[1] - n + 1 + i] for i in range(n))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004): 11-tap Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255."""
    offsets = np.arange(11) - 5
    taps = np.exp(-(offsets**2) / (2 * 1.5**2))
    taps /= taps.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _gaussian_filter(reference, taps), _gaussian_filter(test, taps)
    var_x = _gaussian_filter(reference * reference, taps) - mu_x**2
    var_y = _gaussian_filter(test * test, taps) - mu_y**2
    cov = _gaussian_filter(reference * test, taps) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def encode(image: Image.Image, fmt: ImageFormat, quality: int) -> bytes:
    return encode_image(image, fmt, quality, ImageVariantSpec(avif_speed=AVIF_SPEED))


def bytes_at_ssim(
    reference: Image.Image, fmt: ImageFormat, target: float
) -> tuple[float, int, int, dict[int, tuple[float, int]]]:
    """(interpolated bytes at the target SSIM, lower quality, upper quality, measurements by quality)."""
    reference_luma = luma(reference)
    measured: dict[int, tuple[float, int]] = {}

    def measure(quality: int) -> tuple[float, int]:
        if quality not in measured:
            blob = encode(reference, fmt, quality)
            measured[quality] = (ssim(reference_luma, luma(Image.open(io.BytesIO(blob)))), len(blob))
        return measured[quality]

    low, high = 1, 100
    if measure(high)[0] < target:
        raise SystemExit(f"{fmt} cannot reach SSIM {target} even at quality 100")
    while high - low > 1:
        middle = (low + high) // 2
        if measure(middle)[0] >= target:
            high = middle
        else:
            low = middle
    (ssim_low, bytes_low), (ssim_high, bytes_high) = measure(low), measure(high)
    if ssim_low >= target or ssim_high == ssim_low:
        return float(bytes_high), low, high, measured
    fraction = (target - ssim_low) / (ssim_high - ssim_low)
    return bytes_low + fraction * (bytes_high - bytes_low), low, high, measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ssim-width", type=int, default=1024)
    parser.add_argument("--target-ssim", type=float, nargs="+", default=[0.95, 0.90, 0.97])
    args = parser.parse_args()

    print(f"media image benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    libvips = ".".join(str(pyvips.version(part)) for part in range(3))
    print(f"Pillow {Image.__version__}, pyvips {pyvips.__version__} (libvips {libvips})")
    data = photo_like_jpeg()
    source = Image.open(io.BytesIO(data))
    print(f"source: {source.width}x{source.height} JPEG q92, {len(data) / 1e6:.2f} MB")

    ours_seconds, vips_seconds = [], []
    for _ in range(args.repeat):
        elapsed, our_outputs = timed(ours, data)
        ours_seconds.append(elapsed)
        elapsed, vips_outputs = timed(with_pyvips, data)
        vips_seconds.append(elapsed)
    key = sorted((label, fmt, w, h) for label, fmt, w, h, _ in our_outputs)
    if key != sorted((label, fmt, w, h) for label, fmt, w, h, _ in vips_outputs):
        raise SystemExit(f"the two pipelines made different variants:\n{our_outputs}\n{vips_outputs}")
    print(f"\nvariant set: {len(our_outputs)} outputs (4 sizes x 3 formats), {args.repeat} alternating runs")
    print(f"{'':10}{'format':>7}{'size':>11}{'ours bytes':>12}{'pyvips bytes':>14}")
    vips_bytes = {(label, fmt): size for label, fmt, _, _, size in vips_outputs}
    for label, fmt, width, height, size in our_outputs:
        print(f"{label:10}{fmt:>7}{f'{width}x{height}':>11}{size:>12}{vips_bytes[label, fmt]:>14}")
    ours_median, vips_median = statistics.median(ours_seconds), statistics.median(vips_seconds)
    print(f"ours   runs: {', '.join(f'{s:.2f}' for s in ours_seconds)} s  median {ours_median:.2f} s")
    print(f"pyvips runs: {', '.join(f'{s:.2f}' for s in vips_seconds)} s  median {vips_median:.2f} s")
    ratio = ours_median / vips_median
    print(f"time ratio ours/pyvips: {ratio:.2f}x (goal <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")

    height = round(source.height * args.ssim_width / source.width)
    reference = source.convert("RGB").resize((args.ssim_width, height), Image.Resampling.LANCZOS)
    for target in args.target_ssim:
        compare_bytes_at_ssim(reference, target)


def compare_bytes_at_ssim(reference: Image.Image, target: float) -> None:
    print(f"\nbytes at equal luma SSIM {target} ({reference.width}x{reference.height}, vs. resized original)")
    at_target: dict[str, float] = {}
    formats: tuple[ImageFormat, ...] = ("jpeg", "webp", "avif")
    for fmt in formats:
        started = time.perf_counter()
        size, low, high, measured = bytes_at_ssim(reference, fmt, target)
        at_target[fmt] = size
        print(
            f"{fmt:>5}: {size:10.0f} bytes (between q{low} SSIM {measured[low][0]:.4f} and q{high} "
            f"SSIM {measured[high][0]:.4f}; {len(measured)} encodes, {time.perf_counter() - started:.1f} s)"
        )
    for fmt, goal in (("avif", 0.6), ("webp", 0.75)):
        share = at_target[fmt] / at_target["jpeg"]
        print(f"{fmt} / jpeg bytes: {share:.2f}x (goal <= {goal}x: {'met' if share <= goal else 'MISSED'})")


if __name__ == "__main__":
    main()
