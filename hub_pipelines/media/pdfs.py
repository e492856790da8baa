"""Smaller, inert, web-ready PDFs: active content (scripts, launch actions, embedded files, rich
media, XFA) stripped or the file rejected, streams recompressed, objects packed, large images
optionally downsampled, and linearized ("fast web view") so a browser can show page one before the
rest arrives.

qpdf (under pikepdf) repairs damaged files as it opens them; a file it had to repair is reported as
`repaired`. Encrypted PDFs are rejected, including those that open without a password: rewriting them
would silently drop the owner's encryption and permission restrictions.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pikepdf
from pikepdf import Name, PdfImage
from PIL import Image

from hub_pipelines.media.pdf_active_content import strip_active_content

# Images are downsampled only when well above the target, as Ghostscript does: re-encoding an image
# that is barely over costs quality for almost no bytes.
_DOWNSAMPLE_THRESHOLD = 1.5
_POINTS_PER_INCH = 72.0
_RECOMPRESSED_JPEG_QUALITY = 85
# qpdf names its input in every message; for an in-memory upload that is the BytesIO's repr.
_QPDF_INPUT_NAME = re.compile(r"stream <[^>]*>:?\s*")


ActiveContentPolicy = Literal["strip", "reject"]


class PdfRejected(ValueError):
    """The upload cannot be published as a PDF: unreadable, unrepairable or encrypted."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"rejected PDF {name!r}: {reason}")


@dataclass(frozen=True)
class OptimizedPdf:
    """The rewritten PDF and what the rewrite did."""

    data: bytes
    bytes_before: int
    bytes_after: int
    pages: int
    repaired: bool
    images_downsampled: int = 0
    active_content_removed: Mapping[str, int] = field(default_factory=dict)


def optimize_pdf(
    data: bytes,
    name: str,
    downsample_images_dpi: int | None = None,
    active_content: ActiveContentPolicy = "strip",
) -> OptimizedPdf:
    """`data` rewritten inert, smaller and linearized; raises PdfRejected when it cannot be, or when
    it carries active content and `active_content` is "reject"."""
    try:
        return _optimized(data, name, downsample_images_dpi, active_content)
    except PdfRejected:
        raise
    except Exception as exc:
        # qpdf's repairs surface as assorted exception types on hostile files (RuntimeError,
        # ValueError, pikepdf's own); each is a file that cannot be published.
        raise PdfRejected(name, f"damaged beyond repair: {type(exc).__name__}: {_reason(exc)}") from exc


def _optimized(
    data: bytes, name: str, downsample_images_dpi: int | None, active_content: ActiveContentPolicy
) -> OptimizedPdf:
    with _open_checked(data, name) as pdf:
        repaired = bool(pdf.get_warnings())
        removed = strip_active_content(pdf)
        if removed and active_content == "reject":
            found = ", ".join(f"{category} {count}" for category, count in removed.items())
            raise PdfRejected(name, f"active content ({found}) and PDFs with active content are rejected")
        downsampled = _downsample_images(pdf, downsample_images_dpi) if downsample_images_dpi else 0
        pdf.remove_unreferenced_resources()
        pages = len(pdf.pages)
        output = io.BytesIO()
        try:
            pdf.save(
                output,
                compress_streams=True,
                recompress_flate=True,
                object_stream_mode=pikepdf.ObjectStreamMode.generate,
                linearize=True,
                # The file /ID from the content, not the clock: the same input gives the same bytes,
                # so a re-run publishes under the same content-addressed key.
                deterministic_id=True,
            )
        except pikepdf.PdfError as exc:
            raise PdfRejected(name, f"could not be rewritten: {_reason(exc)}") from exc
    optimized = output.getvalue()
    try:
        with pikepdf.open(io.BytesIO(optimized)) as written:
            linearized = written.is_linearized
    except pikepdf.PdfError as exc:
        # qpdf can write a repaired file it cannot read back (a page tree with no /Kids).
        raise PdfRejected(name, f"the rewritten file cannot be reopened: {_reason(exc)}") from exc
    if not linearized:
        raise PdfRejected(name, "the rewritten file is not linearized")
    return OptimizedPdf(
        data=optimized,
        bytes_before=len(data),
        bytes_after=len(optimized),
        pages=pages,
        repaired=repaired,
        images_downsampled=downsampled,
        active_content_removed=removed,
    )


def _open_checked(data: bytes, name: str) -> pikepdf.Pdf:
    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError as exc:
        raise PdfRejected(name, "encrypted: a password is required to open it") from exc
    except pikepdf.PdfError as exc:
        raise PdfRejected(name, f"not a PDF or damaged beyond repair: {_reason(exc)}") from exc
    if pdf.is_encrypted:
        pdf.close()
        raise PdfRejected(name, "encrypted: it has an owner password and permission restrictions")
    if len(pdf.pages) == 0:
        pdf.close()
        raise PdfRejected(name, "no pages could be recovered")
    return pdf


def page_count_breach(source: str | os.PathLike[str], max_pages: int) -> str | None:
    """Whether the PDF declares more than `max_pages` pages, read from its cross-reference table and
    page tree without touching content. A file qpdf cannot open breaches nothing here."""
    try:
        with pikepdf.open(os.fspath(source)) as pdf:
            pages = len(pdf.pages)
    except Exception:
        return None
    return f"{pages} pages exceeds the limit of {max_pages}" if pages > max_pages else None


def _reason(error: Exception) -> str:
    return _QPDF_INPUT_NAME.sub("", str(error))


def _downsample_images(pdf: pikepdf.Pdf, target_dpi: int) -> int:
    """Downsample images above `target_dpi`; returns how many were rewritten.

    The DPI is estimated against the page's width and height, as if the image filled the page. An
    image drawn smaller has a higher real DPI, so the estimate can only under-shrink, never push an
    image below the target.
    """
    done: set[tuple[int, int]] = set()
    rewritten = 0
    for page in pdf.pages:
        box = page.mediabox
        page_inches = (
            abs(float(box[2]) - float(box[0])) / _POINTS_PER_INCH,
            abs(float(box[3]) - float(box[1])) / _POINTS_PER_INCH,
        )
        # Recursive: pages often draw everything through form XObjects.
        for image in page.get_images().values():
            if not isinstance(image, pikepdf.Stream) or image.objgen in done:
                continue
            done.add(image.objgen)
            if _downsample_one(image, page_inches, target_dpi):
                rewritten += 1
    return rewritten


def _downsample_one(stream: pikepdf.Stream, page_inches: tuple[float, float], target_dpi: int) -> bool:
    if stream.get(Name.ImageMask, False) or Name.Decode in stream:
        return False
    width, height = int(stream.Width), int(stream.Height)
    target = (
        max(1, round(min(width, target_dpi * page_inches[0]))),
        max(1, round(min(height, target_dpi * page_inches[1]))),
    )
    scale = min(target[0] / width, target[1] / height)
    if scale * _DOWNSAMPLE_THRESHOLD > 1:
        return False
    filters = stream.get(Name.Filter)
    filter_name = filters if isinstance(filters, Name) else None
    if filter_name not in (Name.DCTDecode, Name.FlateDecode):
        return False
    try:
        picture = PdfImage(stream).as_pil_image()
    except (pikepdf.PdfError, NotImplementedError, ValueError, OSError):
        return False
    if picture.mode not in ("L", "RGB") or picture.size != (width, height):
        return False
    # Keeping the aspect ratio exact matters more than hitting the target on both axes.
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    smaller = picture.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if filter_name == Name.DCTDecode:
        encoded = io.BytesIO()
        smaller.save(encoded, "JPEG", quality=_RECOMPRESSED_JPEG_QUALITY, optimize=True)
        stream.write(encoded.getvalue(), filter=Name.DCTDecode)
    else:
        # Flate images are often line art or screenshots: keep them lossless.
        stream.write(zlib.compress(smaller.tobytes(), 9), filter=Name.FlateDecode)
    stream.Width, stream.Height = new_size
    stream.BitsPerComponent = 8
    if Name.DecodeParms in stream:
        del stream[Name.DecodeParms]
    return True
