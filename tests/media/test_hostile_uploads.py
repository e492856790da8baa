"""Every upload, however broken, exotic or mislabelled, is rendered or rejected with a reason naming it.

The corpus is generated here: valid files of every format a user might send, each truncated at many
points and corrupted, polyglots, files mislabelled by name and by claimed type, empty and random
bytes. A hypothesis fuzz then throws arbitrary and mutated bytes under any claimed type at the same
limit checks, typing and rendering functions `media/scan_verdict` and `media/renditions` call.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_pipelines.media.content_type import UnsupportedMediaType, classify_upload, detect_content_type
from hub_pipelines.media.rendering import Rendering, RenderSettings, UploadRejected, render_upload
from hub_pipelines.media.upload_limits import UploadLimits, UploadOverLimit, check_upload_limits
from hub_pipelines.media.video import VideoSpec
from tests.media.corpus import corrupted, exotic_images, simple_pdf, truncations
from tests.media.test_video import write_clip

# x264's ultrafast preset keeps the video renders cheap; decoding, which is what hostile bytes
# attack, is the same as with the production settings.
FAST = RenderSettings(video=VideoSpec(preset="ultrafast"))
CLAIMS = [None, "image/jpeg", "image/png", "image/heic", "video/mp4", "application/pdf", "text/html", "x/y"]


def clip() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_clip(Path(folder) / "clip.mp4", 64, 48, seconds=0.4, fps=10).read_bytes()


def zlib_bomb(megabytes: int) -> bytes:
    """`megabytes` MiB of zeros, deflated to about a thousandth of that."""
    deflate = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join(deflate.compress(block) for _ in range(megabytes)) + deflate.flush()


# Ancillary PNG chunks whose deflated body inflates to 64 MiB: text (zTXt, iTXt) and the ICC profile.
BOMB_CHUNKS = [
    (b"zTXt", b"Comment\x00\x00" + zlib_bomb(64)),
    (b"iTXt", b"Comment\x00\x01\x00\x00\x00" + zlib_bomb(64)),
    (b"iCCP", b"icc\x00\x00" + zlib_bomb(64)),
]


def png_with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """`png` with one more chunk right after its IHDR (signature 8 bytes, IHDR 25)."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def corpus() -> list[tuple[str, bytes, str | None]]:
    """(file name, bytes, claimed Content-Type) of every hostile or awkward upload."""
    valid = {**exotic_images(), "brochure.pdf": simple_pdf(2), "clip.mp4": clip()}
    cases: list[tuple[str, bytes, str | None]] = []
    for name, data in valid.items():
        cases.append((name, data, None))
        cases += [(f"cut{i}-{name}", cut, None) for i, cut in enumerate(truncations(data))]
        cases += [(f"flipped{seed}-{name}", corrupted(data, seed), None) for seed in range(3)]
    png, jpeg, pdf = valid["diagram.png"], valid["photo.jpg"], valid["brochure.pdf"]
    cases += [
        ("jpeg-then-pdf.jpg", jpeg + pdf, "image/jpeg"),
        ("pdf-then-jpeg.pdf", pdf + jpeg, "application/pdf"),
        ("png-with-zip.png", png + b"PK\x03\x04" + bytes(40), "image/png"),
        ("html-in-gif.gif", b"GIF89a/*<script>alert(1)</script>*/" + bytes(20), "image/gif"),
        ("pdf-inside-jpeg.jpg", jpeg[:20] + pdf + jpeg[20:], "image/jpeg"),
        ("png-named.jpg", png, "image/jpeg"),
        ("pdf-named.png", pdf, "image/png"),
        ("heic-named.mp4", valid["iphone.heic"], "video/mp4"),
        ("jp2-claimed-jpeg.jpg", valid["camera.jp2"], "image/jpeg"),
        ("video-named.jpg", valid["clip.mp4"], "image/jpeg"),
        ("script.jpg", b"#!/bin/sh\nrm -rf /\n", "image/jpeg"),
        ("empty.png", b"", "image/png"),
        ("empty", b"", None),
        ("html-then-pdf.pdf", b"<html><script>alert(1)</script><!--\n" + pdf + b"-->", "application/pdf"),
        (
            "pdf-with-html.pdf",
            pdf.replace(b"\n", b"\n%<html><script>alert(1)</script>\n", 1),
            "application/pdf",
        ),
        (
            "svg-with-script.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
        ),
        *(
            (f"{kind.decode().lower()}-bomb.png", png_with_chunk(png, kind, body), "image/png")
            for kind, body in BOMB_CHUNKS
        ),
    ]
    rng = np.random.default_rng(13)
    for size in (1, 7, 512, 65_537):
        cases.append((f"random-{size}.bin", rng.bytes(size), "application/octet-stream"))
    signatures = {
        "png": b"\x89PNG\r\n\x1a\n",
        "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        "jp2": b"\x00\x00\x00\x0cjP  \r\n\x87\n",
        "pdf": b"%PDF-1.7\n",
        "mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
        "gif": b"GIF89a",
        "webp": b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    }
    for label, signature in signatures.items():
        cases.append((f"noise-after-{label}", signature + rng.bytes(4096), None))
    return cases


CORPUS = corpus()


def render_or_reject(data: bytes, name: str, claimed: str | None, workdir: Path) -> Rendering | ValueError:
    """What the scan step's limits and the renditions step do with the bytes: the rendering, or the
    rejection one of them raised."""
    source = workdir / "source"
    source.write_bytes(data)
    try:
        check_upload_limits(source, name, claimed, UploadLimits())
        detected = classify_upload(data, name, claimed)
        return render_upload(source, detected.kind, name, workdir / "out", FAST)
    except (UploadOverLimit, UnsupportedMediaType, UploadRejected) as rejection:
        return rejection


def assert_names_the_upload(outcome: Rendering | ValueError, key: str, workdir: Path) -> None:
    if isinstance(outcome, ValueError):
        message = str(outcome)
        assert message.startswith(f"rejected upload '{key}': "), message
        assert str(workdir) not in message and "'source'" not in message, message
        assert " object at 0x" not in message, message
    else:
        assert outcome.files, key
        for file in outcome.files:
            assert b"<script" not in file.data.lower(), (key, file.label)


@pytest.mark.parametrize(("name", "data", "claimed"), CORPUS, ids=[case[0] for case in CORPUS])
def test_corpus_upload_is_rendered_or_rejected_naming_the_upload(
    name: str, data: bytes, claimed: str | None, tmp_path: Path
) -> None:
    key = f"incoming/ab12/{name}"

    outcome = render_or_reject(data, key, claimed, tmp_path)

    assert_names_the_upload(outcome, key, tmp_path)


@pytest.mark.parametrize("name", sorted(set(exotic_images()) - {"favicon.ico"}))
def test_valid_image_of_every_routed_format_is_typed_as_an_image_and_rendered(
    name: str, tmp_path: Path
) -> None:
    data = exotic_images()[name]

    detected = detect_content_type(data, "application/octet-stream")
    outcome = render_or_reject(data, name, None, tmp_path)

    assert detected.kind == "image"
    assert isinstance(outcome, Rendering)
    assert {file.kind for file in outcome.files} == {"image"}
    assert {(file.width, file.height) for file in outcome.files if file.label == "small"} == {(64, 48)}


def test_icon_is_rejected_as_an_unsupported_type_naming_the_upload(tmp_path: Path) -> None:
    outcome = render_or_reject(exotic_images()["favicon.ico"], "incoming/a/favicon.ico", None, tmp_path)

    assert isinstance(outcome, UnsupportedMediaType)
    assert str(outcome).startswith("rejected upload 'incoming/a/favicon.ico': unsupported media type image/")


def test_heic_photo_is_never_routed_to_the_video_step() -> None:
    assert detect_content_type(exotic_images()["iphone.heic"], "video/mp4").mime == "image/heic"


def test_jpeg_2000_is_not_typed_as_jpeg() -> None:
    detected = detect_content_type(exotic_images()["camera.jp2"], "image/jpeg")
    assert (detected.mime, detected.mismatch) == ("image/jp2", True)


SEEDS = [data for name, data, _claimed in CORPUS if not name.startswith(("cut", "flipped", "random"))]


@st.composite
def upload_bytes(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, or a valid upload truncated and with some bytes overwritten."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=upload_bytes(), claimed=st.sampled_from(CLAIMS) | st.text(max_size=40))
def test_fuzzed_upload_under_any_claimed_type_is_rendered_or_rejected(
    data: bytes, claimed: str | None
) -> None:
    key = "incoming/fuzz/upload.bin"
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)

        outcome = render_or_reject(data, key, claimed, workdir)

        assert_names_the_upload(outcome, key, workdir)
