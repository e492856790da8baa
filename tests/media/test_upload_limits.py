"""The header checks `media/scan_verdict` runs before the virus scan: bombs are rejected without
decoding, unreadable bytes go on to the scanner."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from hub_pipelines.media.upload_limits import UploadLimits, UploadOverLimit, check_upload_limits
from hub_pipelines.media.video import VideoLimits
from tests.media.corpus import encode, png_header_only, simple_pdf, zero_png
from tests.media.test_video import write_clip

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
PEAK_MEMORY_LIMIT_KIB = 300 * 1024


@pytest.fixture(scope="module")
def zero_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "zeros.png"
    path.write_bytes(zero_png(20000, 20000))
    return path


def written(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_zero_png_of_20000_squared_is_rejected_from_its_header_within_300_mb(zero_bomb: Path) -> None:
    # Linux keeps a process's peak RSS across fork and exec (the parent's mm at exec time), so a
    # subprocess of a large pytest inherits pytest's peak. The check therefore runs in a child
    # forked from a fresh, small interpreter: its peak starts at that interpreter's size.
    script = textwrap.dedent(
        f"""
        import json, os, resource, sys
        reader, writer = os.pipe()
        if os.fork() == 0:
            from pathlib import Path
            from hub_pipelines.media.upload_limits import UploadLimits, UploadOverLimit, check_upload_limits
            try:
                check_upload_limits(Path({str(zero_bomb)!r}), "incoming/x/zeros.png", "image/png", UploadLimits())
                outcome = "accepted"
            except UploadOverLimit as rejection:
                outcome = str(rejection)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            os.write(writer, json.dumps({{"outcome": outcome, "peak_kib": peak}}).encode())
            os._exit(0)
        os.close(writer)
        os.wait()
        sys.stdout.write(os.read(reader, 1 << 16).decode())
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True)
    measured = json.loads(completed.stdout)

    assert zero_bomb.stat().st_size < 400_000
    assert measured["outcome"].startswith("rejected upload 'incoming/x/zeros.png': image over a limit: ")
    assert "400000000 pixels" in measured["outcome"]
    assert measured["peak_kib"] < PEAK_MEMORY_LIMIT_KIB, measured


def test_image_over_the_configured_pixel_limit_is_rejected_naming_its_size(tmp_path: Path) -> None:
    path = written(tmp_path, "wide.png", png_header_only(3000, 2000))

    with pytest.raises(
        UploadOverLimit, match=r"'up/wide.png': image over a limit: 3000x2000 = 6000000 pixels"
    ):
        check_upload_limits(path, "up/wide.png", None, UploadLimits(max_image_pixels=5_000_000))


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (UploadLimits(video=VideoLimits(max_duration_seconds=0.5)), "1.0 s exceeds the limit of 0.5 s"),
        (UploadLimits(video=VideoLimits(max_pixels=64 * 47)), "64x48 exceeds the limit of 3008 pixels"),
        (UploadLimits(video=VideoLimits(max_input_bytes=100)), "bytes exceeds the limit of 100"),
    ],
)
def test_video_over_a_limit_is_rejected_from_its_container_header(
    limits: UploadLimits, reason: str, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 64, 48, seconds=1.0, fps=10)

    with pytest.raises(UploadOverLimit, match=rf"'up/clip.mp4': video over a limit: .*{reason}"):
        check_upload_limits(clip, "up/clip.mp4", "video/mp4", limits)


def test_pdf_over_the_page_limit_is_rejected(tmp_path: Path) -> None:
    path = written(tmp_path, "book.pdf", simple_pdf(5))

    with pytest.raises(
        UploadOverLimit, match=r"'up/book.pdf': pdf over a limit: 5 pages exceeds the limit of 3"
    ):
        check_upload_limits(path, "up/book.pdf", None, UploadLimits(max_pdf_pages=3))


def test_image_and_pdf_over_their_byte_caps_are_rejected(tmp_path: Path) -> None:
    image = written(tmp_path, "big.png", encode(Image.new("RGB", (64, 64)), "PNG"))
    pdf = written(tmp_path, "big.pdf", simple_pdf(1))

    with pytest.raises(UploadOverLimit, match=r"image over a limit: \d+ bytes exceeds the limit of 10"):
        check_upload_limits(image, "big.png", None, UploadLimits(max_image_bytes=10))
    with pytest.raises(UploadOverLimit, match=r"pdf over a limit: \d+ bytes exceeds the limit of 10"):
        check_upload_limits(pdf, "big.pdf", None, UploadLimits(max_pdf_bytes=10))


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("eicar.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + EICAR, "image"),
        ("cut.png", encode(Image.new("RGB", (64, 64)), "PNG")[:40], "image"),
        ("broken.pdf", b"%PDF-1.7\n" + EICAR, "pdf"),
        ("broken.mp4", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + EICAR, "video"),
        ("notes.txt", EICAR, "other"),
    ],
)
def test_unreadable_bytes_pass_on_to_the_scanner(name: str, data: bytes, kind: str, tmp_path: Path) -> None:
    detected = check_upload_limits(written(tmp_path, name, data), name, None, UploadLimits())

    assert detected.kind == kind
