"""Typing uploads by their bytes, whatever their names and claimed Content-Types say."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from hub_pipelines.media.content_type import (
    UnsupportedMediaType,
    classify_upload,
    detect_content_type,
)
from tests.media.corpus import encode
from tests.services import require_binary


def tiny_pdf() -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    ffmpeg = require_binary("ffmpeg", install="apt-get install -y ffmpeg")
    target = Path(tmp_path_factory.mktemp("clip")) / "clip.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=5",
            "-t",
            "1",
            str(target),
        ],
        check=True,
    )
    return target.read_bytes()


@pytest.mark.parametrize(
    ("fmt", "mime", "extension"),
    [
        ("JPEG", "image/jpeg", ".jpg"),
        ("PNG", "image/png", ".png"),
        ("GIF", "image/gif", ".gif"),
        ("WEBP", "image/webp", ".webp"),
        ("AVIF", "image/avif", ".avif"),
        ("TIFF", "image/tiff", ".tiff"),
    ],
)
def test_images_are_typed_by_their_bytes(fmt: str, mime: str, extension: str) -> None:
    detected = classify_upload(encode(Image.new("RGB", (8, 8)), fmt), "upload.bin")
    assert (detected.kind, detected.mime, detected.extension) == ("image", mime, extension)


def test_pdf_is_typed_as_pdf() -> None:
    detected = classify_upload(tiny_pdf(), "report")
    assert (detected.kind, detected.mime, detected.extension) == ("pdf", "application/pdf", ".pdf")


def test_mp4_is_typed_as_video(tiny_mp4: bytes) -> None:
    detected = classify_upload(tiny_mp4, "clip.jpg", claimed_mime="image/jpeg")
    assert (detected.kind, detected.mime, detected.extension) == ("video", "video/mp4", ".mp4")
    assert detected.mismatch


def test_png_claimed_as_jpeg_is_recorded_as_a_mismatch() -> None:
    detected = classify_upload(
        encode(Image.new("RGB", (8, 8)), "PNG"), "photo.jpg", claimed_mime="image/jpeg"
    )
    assert detected.mime == "image/png"
    assert detected.claimed_mime == "image/jpeg"
    assert detected.mismatch


def test_claimed_type_alias_with_parameters_is_not_a_mismatch() -> None:
    jpeg = encode(Image.new("RGB", (8, 8)), "JPEG")
    assert not classify_upload(jpeg, "a.jpg", claimed_mime="Image/JPG; charset=binary").mismatch
    assert not classify_upload(jpeg, "a.jpg").mismatch


def test_text_file_named_jpg_is_rejected_as_text() -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        classify_upload(b"#!/bin/sh\necho definitely not a picture\n", "cat.jpg", claimed_mime="image/jpeg")
    message = str(raised.value)
    assert "'cat.jpg'" in message and "text/plain" in message and "image/jpeg" in message
    assert raised.value.detected.kind == "other"


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml"),
        (b"PK\x03\x04" + b"\x00" * 60, None),
        (bytes(range(256)) * 4, "application/octet-stream"),
        (b"", "application/x-empty"),
    ],
    ids=["svg", "zip", "binary-garbage", "empty"],
)
def test_anything_but_image_video_or_pdf_is_rejected(data: bytes, mime: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match=r"rejected upload 'upload.bin': unsupported media type"):
        classify_upload(data, "upload.bin")
    detected = detect_content_type(data)
    assert detected.kind == "other"
    if mime is not None:
        assert detected.mime == mime
