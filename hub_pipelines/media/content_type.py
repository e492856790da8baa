"""What an upload really is, decided from its bytes alone.

The uploader's file name and Content-Type are recorded but never trusted: a script named `cat.jpg`
is text, and is rejected as text.

Detection uses puremagic rather than python-magic/libmagic: it is already a dependency, pure Python
(no system library to install on every machine and image), released regularly, and its signature
table covers every format this pipeline accepts. What it lacks is a verdict for plain text (no magic
number), so bytes with no signature that decode as UTF-8 are reported as `text/plain`. Two families
it gets wrong are read here first: JPEG 2000 (puremagic says `image/jpeg`, which Pillow's JPEG
decoder cannot read) and ISO base media files, whose `ftyp` brands tell a HEIF/HEIC or AVIF still
from an MP4 (puremagic calls an iPhone photo `video/mp4`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

MediaKind = Literal["image", "video", "pdf", "other"]

# Only formats the renderers can decode are routed; anything else (SVG, ICO, audio, archives) is
# "other" and rejected, because routing it would fail later with a less helpful error.
_ROUTED: dict[str, tuple[MediaKind, str]] = {
    "image/jpeg": ("image", ".jpg"),
    "image/jp2": ("image", ".jp2"),
    "image/heic": ("image", ".heic"),
    "image/png": ("image", ".png"),
    "image/gif": ("image", ".gif"),
    "image/webp": ("image", ".webp"),
    "image/avif": ("image", ".avif"),
    "image/tiff": ("image", ".tiff"),
    "image/bmp": ("image", ".bmp"),
    "video/mp4": ("video", ".mp4"),
    "video/quicktime": ("video", ".mov"),
    "video/webm": ("video", ".webm"),
    "video/x-matroska": ("video", ".mkv"),
    "video/x-msvideo": ("video", ".avi"),
    "application/pdf": ("pdf", ".pdf"),
}

_MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/jpx": "image/jp2",
    "image/heif": "image/heic",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heic",
    "image/pjpeg": "image/jpeg",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "video/avi": "video/x-msvideo",
    "video/msvideo": "video/x-msvideo",
    "application/x-pdf": "application/pdf",
}

# Signatures all sit in the first few KiB; reading more only costs time on large videos.
SNIFF_BYTES = 64 * 1024

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"
# ftyp brands of still images (HEIF: ISO/IEC 23008-12; AVIF: AV1 Image File Format). `mif1` and
# `msf1` only say "an image file", so the more specific brand beside them decides.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"heif"}
_GENERIC_IMAGE_BRANDS = {b"mif1", b"msf1", b"mif2"}


class UnsupportedMediaType(ValueError):
    """The upload's bytes are not an image, video or PDF this pipeline can process."""

    def __init__(self, name: str, detected: DetectedType) -> None:
        self.name = name
        self.detected = detected
        claimed = f" (claimed {detected.claimed_mime})" if detected.claimed_mime else ""
        self.reason = f"unsupported media type {detected.mime}{claimed}"
        super().__init__(f"rejected upload {name!r}: {self.reason}")


@dataclass(frozen=True)
class DetectedType:
    """The type found in the bytes, and whether the uploader claimed something else."""

    kind: MediaKind
    mime: str
    extension: str
    claimed_mime: str | None = None

    @property
    def mismatch(self) -> bool:
        """True when the uploader's Content-Type disagrees with the bytes."""
        return self.claimed_mime is not None and normalize_mime(self.claimed_mime) != self.mime


def normalize_mime(mime: str) -> str:
    """Lower-cased, parameters dropped, common aliases folded (`image/jpg` -> `image/jpeg`)."""
    base = mime.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(base, base)


def detect_content_type(data: bytes, claimed_mime: str | None = None) -> DetectedType:
    """The media type of `data` judged from its leading bytes; kind is "other" when not routed."""
    head = data[:SNIFF_BYTES]
    mime, extension = _sniff(head)
    kind, routed_extension = _ROUTED.get(mime, ("other", extension))
    return DetectedType(kind=kind, mime=mime, extension=routed_extension, claimed_mime=claimed_mime)


def classify_upload(data: bytes, name: str, claimed_mime: str | None = None) -> DetectedType:
    """Like `detect_content_type`, but anything that is not an image, video or PDF is rejected."""
    detected = detect_content_type(data, claimed_mime)
    if detected.kind == "other":
        raise UnsupportedMediaType(name, detected)
    return detected


def _sniff(head: bytes) -> tuple[str, str]:
    if not head:
        return "application/x-empty", ""
    if head.startswith((_JP2_SIGNATURE, _J2K_CODESTREAM)):
        return "image/jp2", ".jp2"
    still = _iso_still_image(head)
    if still:
        return still
    # puremagic reads its signature tables when imported: a run that sniffs pays it, not the code location.
    import puremagic

    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError, IndexError, struct.error):
        # puremagic's deeper format checks parse the bytes and can trip on hostile ones.
        matches = []
    if matches:
        best = max(match.confidence for match in matches)
        top = [match for match in matches if match.confidence == best and match.mime_type]
        routed = [match for match in top if normalize_mime(match.mime_type) in _ROUTED]
        candidates = routed or top
        if candidates:
            return normalize_mime(candidates[0].mime_type), candidates[0].extension
    if _looks_like_text(head):
        return "text/plain", ".txt"
    return "application/octet-stream", ""


def _iso_still_image(head: bytes) -> tuple[str, str] | None:
    """(mime, extension) when the leading `ftyp` box names a HEIF/HEIC or AVIF still image."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    box_size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
    brands = {major} | compatible if major in _GENERIC_IMAGE_BRANDS else {major}
    if major in _GENERIC_IMAGE_BRANDS and not brands & (_AVIF_BRANDS | _HEIC_BRANDS):
        brands |= {b"heic"}
    if brands & _AVIF_BRANDS:
        return "image/avif", ".avif"
    if brands & _HEIC_BRANDS:
        return "image/heic", ".heic"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the sniff window is still text.
        if exc.start < len(head) - 3:
            return False
    return True
