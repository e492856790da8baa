"""Generated media that looks like real uploads: a photo-like JPEG, a short MP4 clip, a small PDF."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
from PIL import Image


def photo_jpeg(width: int = 1600, height: int = 1200, seed: int = 0) -> bytes:
    """Smooth gradients with texture and noise, so encoders see something like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(x / 97.0 + seed) * np.cos(y / 143.0)
    green = 128 + 90 * np.sin((x + y) / 211.0)
    blue = 140 + 80 * np.cos(x / 53.0 - y / 71.0)
    pixels = np.stack([red, green, blue], axis=-1) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def clip_mp4(seconds: float = 2.0, width: int = 640, height: int = 360, fps: int = 24) -> bytes:
    """A short H.264 + AAC clip of moving gradients with a tone."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        y, x = np.mgrid[0:height, 0:width]
        frames = int(seconds * fps)
        for index in range(frames):
            shift = index * 4
            rgb = np.stack(
                [(x + shift) % 256, (y + shift) % 256, ((x + y) // 2 + shift) % 256], axis=-1
            ).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        samples_per_frame = 1024
        total = int(seconds * 44100)
        t = np.arange(total) / 44100.0
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, total - samples_per_frame, samples_per_frame):
            chunk = tone[start : start + samples_per_frame].reshape(1, -1)
            sound = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            sound.sample_rate = 44100
            sound.pts = start
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return out.getvalue()


def small_pdf(pages: int = 3) -> bytes:
    """A few pages with text and an embedded image, written without compression so optimizing shows."""
    import pikepdf

    pdf = pikepdf.new()
    for number in range(pages):
        content = f"BT /F1 24 Tf 72 720 Td (hub_pipelines demo page {number + 1}) Tj ET".encode()
        page = pikepdf.Dictionary(
            Type=pikepdf.Name.Page,
            MediaBox=[0, 0, 612, 792],
            Contents=pdf.make_stream(content),
            Resources=pikepdf.Dictionary(
                Font=pikepdf.Dictionary(
                    F1=pikepdf.Dictionary(
                        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
                    )
                )
            ),
        )
        pdf.pages.append(pikepdf.Page(page))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()
