"""The cheap checks an upload passes before anything expensive (the virus scan, decoding) sees it.

A 389 KB PNG can declare 20000x20000 pixels: clamscan spent 17 s and 2 GB inflating it before the
image step refused it. So the bytes are typed from their first KiB, and each kind is held to limits
read from headers alone: the image's declared size (Pillow opens lazily), the video container's
duration and coded size (no frame decoded), the PDF's page count (cross-reference table and page
tree), and a byte cap per kind. Only a breached limit rejects here; bytes that do not parse go on to
the scan and are judged by the renderer, so an infected file is still quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hub_pipelines.media.content_type import SNIFF_BYTES, DetectedType, detect_content_type
from hub_pipelines.media.images import header_limit_breach as image_breach
from hub_pipelines.media.pdfs import page_count_breach
from hub_pipelines.media.video import VideoLimits
from hub_pipelines.media.video_probe import header_limit_breach as video_breach


class UploadOverLimit(ValueError):
    """The upload declares more pixels, seconds, pages or bytes than the pipeline will process."""

    def __init__(self, name: str, kind: str, reason: str) -> None:
        self.name = name
        self.kind = kind
        self.reason = reason
        super().__init__(f"rejected upload {name!r}: {kind} over a limit: {reason}")


@dataclass(frozen=True)
class UploadLimits:
    max_image_pixels: int = 89_478_485
    max_image_bytes: int = 100 << 20
    video: VideoLimits = field(default_factory=VideoLimits)
    max_pdf_pages: int = 2_000
    max_pdf_bytes: int = 200 << 20


def check_upload_limits(
    source: Path, name: str, claimed_mime: str | None, limits: UploadLimits
) -> DetectedType:
    """The upload's type, when the file at `source` (called `name`) is within `limits`.

    Raises UploadOverLimit with the limit it breaches; reads headers only, never decodes content.
    """
    with source.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    detected = detect_content_type(head, claimed_mime)
    size = source.stat().st_size
    breach: str | None = None
    if detected.kind == "image":
        breach = _bytes_breach(size, limits.max_image_bytes) or image_breach(source, limits.max_image_pixels)
    elif detected.kind == "video":
        breach = video_breach(source, limits.video)
    elif detected.kind == "pdf":
        breach = _bytes_breach(size, limits.max_pdf_bytes) or page_count_breach(source, limits.max_pdf_pages)
    if breach:
        raise UploadOverLimit(name, detected.kind, breach)
    return detected


def _bytes_breach(size: int, limit: int) -> str | None:
    return f"{size} bytes exceeds the limit of {limit}" if size > limit else None
