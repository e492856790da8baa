"""One upload in, every web rendition out: routes images, videos and PDFs to their renderers.

Images get the thumbnail and width rungs in WebP, AVIF and JPEG; videos get the H.264 ladder plus a
JPEG thumbnail and poster from one representative frame; PDFs get one optimized, linearized copy.
The renderers raise their own rejection (ImageRejected, VideoRejected, PdfRejected) with the reason;
`render_upload` turns each, and anything else a decoder raises on hostile bytes, into one
`UploadRejected` that names the upload, never the temporary file it was rendered from.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from hub_pipelines.media.content_type import MediaKind
from hub_pipelines.media.images import ImageRejected, ImageVariantSpec, render_image_variants
from hub_pipelines.media.pdfs import ActiveContentPolicy, PdfRejected, optimize_pdf
from hub_pipelines.media.video import VideoRejected, VideoSpec, extract_stills, render_renditions

_EXTENSIONS = {"webp": ".webp", "avif": ".avif", "jpeg": ".jpg", "mp4": ".mp4", "pdf": ".pdf"}


class UploadRejected(ValueError):
    """The upload cannot be published: no renderer for its kind, or its renderer refused the bytes."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"rejected upload {name!r}: {reason}")


@dataclass(frozen=True)
class RenderSettings:
    images: ImageVariantSpec = field(default_factory=ImageVariantSpec)
    video: VideoSpec = field(default_factory=VideoSpec)
    thumbnail_width: int = 320
    still_quality: int = 85
    pdf_downsample_dpi: int | None = None
    pdf_active_content: ActiveContentPolicy = "strip"


@dataclass(frozen=True)
class RenderedFile:
    label: str
    format: str
    kind: str
    mime: str
    width: int
    height: int
    data: bytes
    encode_seconds: float
    duration_seconds: float | None = None
    # What was stripped from a PDF to make it inert, per category (see media.pdf_active_content).
    active_content_removed: Mapping[str, int] | None = None

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.format]


@dataclass(frozen=True)
class Rendering:
    """Every rendition of one upload, and the figures an operator plots."""

    files: list[RenderedFile]
    source_bytes: int
    wall_seconds: float
    duration_seconds: float | None = None

    @property
    def bytes_out(self) -> int:
        return sum(len(file.data) for file in self.files)

    def encode_seconds_per_rung(self) -> dict[str, float]:
        return {f"{file.label}.{file.format}": round(file.encode_seconds, 4) for file in self.files}

    @property
    def realtime_factor(self) -> float | None:
        """Media seconds encoded per wall second, for videos (the whole ladder and the stills)."""
        if not self.duration_seconds or not self.wall_seconds:
            return None
        return self.duration_seconds / self.wall_seconds


def render_upload(
    source_path: Path, kind: MediaKind, name: str, workdir: Path, settings: RenderSettings | None = None
) -> Rendering:
    """Every rendition of the upload at `source_path` (called `name`), judged by its detected kind;
    raises UploadRejected, and nothing else, when the bytes cannot be rendered."""
    settings = settings or RenderSettings()
    started = time.perf_counter()
    source_bytes = source_path.stat().st_size
    duration: float | None = None
    try:
        if kind == "image":
            files = _image_files(source_path.read_bytes(), name, settings)
        elif kind == "video":
            files, duration = _video_files(source_path, name, workdir, settings)
        elif kind == "pdf":
            files = [_pdf_file(source_path.read_bytes(), name, settings)]
        else:
            raise UploadRejected(name, f"no renderer for kind '{kind}'")
    except (ImageRejected, VideoRejected, PdfRejected) as error:
        raise UploadRejected(name, f"{kind}: {error.reason}") from error
    except UploadRejected:
        raise
    except Exception as error:
        # PyAV and Pillow raise more than their documented errors on hostile input; a file that
        # breaks a decoder is a file that cannot be published, not a failed pipeline.
        raise UploadRejected(name, f"{kind}: cannot be decoded: {type(error).__name__}: {error}") from error
    return Rendering(files, source_bytes, time.perf_counter() - started, duration)


def _image_files(data: bytes, name: str, settings: RenderSettings) -> list[RenderedFile]:
    return [
        RenderedFile(
            label=variant.label,
            format=variant.format,
            kind="image",
            mime=variant.mime,
            width=variant.width,
            height=variant.height,
            data=variant.data,
            encode_seconds=variant.encode_seconds,
        )
        for variant in render_image_variants(data, name, settings.images)
    ]


def _video_files(
    source_path: Path, name: str, workdir: Path, settings: RenderSettings
) -> tuple[list[RenderedFile], float]:
    renditions = render_renditions(source_path, workdir, settings.video, name=name)
    files = [
        RenderedFile(
            label=rendition.label,
            format="mp4",
            kind="video",
            mime="video/mp4",
            width=rendition.width,
            height=rendition.height,
            data=rendition.path.read_bytes(),
            encode_seconds=rendition.encode_seconds,
            duration_seconds=rendition.duration_seconds,
        )
        for rendition in renditions
    ]
    started = time.perf_counter()
    stills = extract_stills(
        source_path,
        thumbnail_width=settings.thumbnail_width,
        quality=settings.still_quality,
        limits=settings.video.limits,
        name=name,
    )
    still_seconds = time.perf_counter() - started
    for label, data in (("thumbnail", stills.thumbnail), ("poster", stills.poster)):
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        files.append(RenderedFile(label, "jpeg", "image", "image/jpeg", width, height, data, still_seconds))
    duration = max((rendition.duration_seconds for rendition in renditions), default=0.0)
    return files, duration


def _pdf_file(data: bytes, name: str, settings: RenderSettings) -> RenderedFile:
    started = time.perf_counter()
    optimized = optimize_pdf(data, name, settings.pdf_downsample_dpi, settings.pdf_active_content)
    return RenderedFile(
        label="document",
        format="pdf",
        kind="document",
        mime="application/pdf",
        width=0,
        height=0,
        data=optimized.data,
        encode_seconds=time.perf_counter() - started,
        active_content_removed=dict(optimized.active_content_removed),
    )
