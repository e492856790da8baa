"""One behavioural suite for both virus scanners: clamd (a real daemon) and clamscan."""

from __future__ import annotations

import io
import json
import random
import socket
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from hub_pipelines.core.ports import ScannerUnavailable, VirusScanner
from hub_pipelines.resources.media.scan_limits import ScanLimits, production_clamd_conf
from hub_pipelines.resources.media.virus_scanner import (
    EICAR_TEST_DATABASE,
    ClamdScanner,
    ClamscanScanner,
    ScannerNotInstalled,
)
from tests.services import free_port
from tests.services.clamd import ClamdAddress, start_clamd

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Eicar-Test-Signature"

ScannerFactory = Callable[..., VirusScanner]


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (32, 32), (10, 200, 90, 255)).save(out, format="PNG")
    return out.getvalue()


def pdf_bytes() -> bytes:
    document = pikepdf.new()
    document.add_blank_page(page_size=(595, 842))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def mp4_bytes() -> bytes:
    ftyp = b"ftypisom" + struct.pack("!I", 512) + b"isomiso2avc1mp41"
    mdat = bytes(range(256)) * 64
    return struct.pack("!I", 8 + len(ftyp)) + ftyp + struct.pack("!I", 8 + len(mdat)) + b"mdat" + mdat


def zip_with(member: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
    return out.getvalue()


def in_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture(params=["clamd", "clamscan"])
def make_scanner(request: pytest.FixtureRequest) -> ScannerFactory:
    if request.param == "clamd":
        server: ClamdAddress = request.getfixturevalue("clamd_server")
        return lambda **settings: ClamdScanner(host=server.host, port=server.port, **settings)
    return lambda **settings: ClamscanScanner(database=str(EICAR_TEST_DATABASE), **settings)


def test_eicar_file_is_infected_with_the_eicar_signature(make_scanner: ScannerFactory) -> None:
    verdict = make_scanner().scan([EICAR], "eicar.com")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith(EICAR_SIGNATURE)
    assert verdict.scanned_bytes == len(EICAR)


def test_eicar_after_a_valid_jpeg_is_infected(make_scanner: ScannerFactory) -> None:
    image = jpeg_bytes()
    assert Image.open(io.BytesIO(image)).format == "JPEG"

    verdict = make_scanner().scan(in_chunks(image + EICAR, 1000), "cat.jpg")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith(EICAR_SIGNATURE)


def test_eicar_deflated_inside_a_zip_is_infected(make_scanner: ScannerFactory) -> None:
    archive = zip_with("docs/readme.com", EICAR)
    assert EICAR not in archive

    verdict = make_scanner().scan([archive], "bundle.zip")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith(EICAR_SIGNATURE)


def test_eicar_split_across_many_small_chunks_is_infected(make_scanner: ScannerFactory) -> None:
    verdict = make_scanner().scan(in_chunks(b"padding " * 100 + EICAR, 7), "split.bin")

    assert not verdict.clean


@pytest.mark.parametrize(
    ("name", "build"),
    [("photo.jpg", jpeg_bytes), ("icon.png", png_bytes), ("invoice.pdf", pdf_bytes), ("clip.mp4", mp4_bytes)],
)
def test_clean_media_and_documents_are_clean(
    make_scanner: ScannerFactory, name: str, build: Callable[[], bytes]
) -> None:
    data = build()

    verdict = make_scanner().scan(in_chunks(data, 4096), name)

    assert verdict.clean
    assert verdict.signature is None
    assert verdict.scanned_bytes == len(data)


def test_stream_over_the_stream_limit_is_not_scannable_without_reading_further(
    make_scanner: ScannerFactory,
) -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for index in range(100):
            pulled.append(index)
            yield b"x" * 600

    verdict = make_scanner(limits=ScanLimits(max_stream_bytes=1000)).scan(chunks(), "huge.bin")

    assert not verdict.clean
    assert verdict.signature == "not scannable: limit StreamMaxLength (1000 bytes)"
    assert verdict.reason == verdict.signature
    assert len(pulled) == 2


def test_unreachable_clamd_raises_scanner_unavailable_naming_address_and_input() -> None:
    port = free_port()
    scanner = ClamdScanner(host="127.0.0.1", port=port, timeout_seconds=5)

    with pytest.raises(ScannerUnavailable, match=rf"127\.0\.0\.1:{port}.*'cat\.jpg'"):
        scanner.scan([b"data"], "cat.jpg")
    assert not scanner.ping()


def test_clamd_that_never_answers_raises_scanner_unavailable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        scanner = ClamdScanner(host="127.0.0.1", port=port, timeout_seconds=0.5)

        with pytest.raises(ScannerUnavailable, match="timed out"):
            scanner.scan([b"data"], "slow.bin")


@pytest.fixture(scope="module")
def clamd_with_one_megabyte_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdAddress]:
    folder = tmp_path_factory.mktemp("clamd-small")
    with start_clamd(folder, ScanLimits(max_stream_bytes=1 << 20)) as address:
        yield address


def test_clamd_own_stream_limit_is_not_scannable(clamd_with_one_megabyte_limit: ClamdAddress) -> None:
    server = clamd_with_one_megabyte_limit
    scanner = ClamdScanner(host=server.host, port=server.port)

    verdict = scanner.scan(in_chunks(b"y" * (3 << 20), 1 << 16), "big.bin")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith("not scannable: limit StreamMaxLength")
    assert "size limit exceeded" in verdict.signature


def test_clamd_over_its_unix_socket_detects_eicar(clamd_with_one_megabyte_limit: ClamdAddress) -> None:
    scanner = ClamdScanner(unix_socket=clamd_with_one_megabyte_limit.unix_socket)

    assert scanner.ping()
    assert not scanner.scan([EICAR], "eicar.com").clean


def test_clamscan_without_signatures_raises_scanner_unavailable_with_its_error(tmp_path: Path) -> None:
    scanner = ClamscanScanner(database=str(tmp_path))

    with pytest.raises(ScannerUnavailable, match=r"'photo\.jpg' \(exit code 2\).*database"):
        scanner.scan([jpeg_bytes()], "photo.jpg")


def test_missing_clamscan_raises_scanner_not_installed_with_the_install_command() -> None:
    scanner = ClamscanScanner(executable="clamscan-not-installed-here")

    with pytest.raises(ScannerNotInstalled, match="apt-get install -y clamav"):
        scanner.scan([b"data"], "photo.jpg")


def pdf_with_eicar_attachment(*, object_streams: bool) -> bytes:
    """EICAR as a PDF attachment, written as pikepdf writes one: a flate-compressed EmbeddedFile
    stream, its file spec and name tree in compressed object streams when `object_streams`."""
    document = pikepdf.new()
    document.add_blank_page(page_size=(595, 842))
    document.attachments["readme.com"] = pikepdf.AttachedFileSpec(document, EICAR, filename="readme.com")
    out = io.BytesIO()
    mode = pikepdf.ObjectStreamMode.generate if object_streams else pikepdf.ObjectStreamMode.preserve
    document.save(out, compress_streams=True, object_stream_mode=mode)
    return out.getvalue()


def test_eicar_in_a_flate_compressed_pdf_attachment_is_infected(make_scanner: ScannerFactory) -> None:
    document = pdf_with_eicar_attachment(object_streams=False)
    assert EICAR not in document
    assert b"/EmbeddedFile" in document and b"/FlateDecode" in document

    verdict = make_scanner().scan(in_chunks(document, 300), "invoice.pdf")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith(EICAR_SIGNATURE)
    assert verdict.scanned_bytes == len(document)


def test_eicar_attachment_listed_only_inside_a_compressed_object_stream_is_infected(
    make_scanner: ScannerFactory,
) -> None:
    document = pdf_with_eicar_attachment(object_streams=True)
    assert EICAR not in document
    assert b"/ObjStm" in document and b"/EmbeddedFiles" not in document

    verdict = make_scanner().scan([document], "report.pdf")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith(EICAR_SIGNATURE)


def test_pdf_no_pdf_reader_can_open_is_not_scannable(make_scanner: ScannerFactory) -> None:
    verdict = make_scanner().scan([b"%PDF-1.7\n" + bytes(range(256)) * 8], "broken.pdf")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith("not scannable: unreadable PDF")


# Small enough to hit with a few MiB; the stream limit stays above them so ClamAV's own limits answer.
SMALL_LIMITS = ScanLimits(max_stream_bytes=8 << 20, max_file_bytes=1 << 20, max_scan_bytes=2 << 20)


@pytest.fixture(scope="module")
def clamd_with_small_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdAddress]:
    with start_clamd(tmp_path_factory.mktemp("clamd-limits"), SMALL_LIMITS) as address:
        yield address


@pytest.fixture(params=["clamd", "clamscan"])
def small_limits_scanner(request: pytest.FixtureRequest) -> VirusScanner:
    if request.param == "clamd":
        server: ClamdAddress = request.getfixturevalue("clamd_with_small_limits")
        return ClamdScanner(host=server.host, port=server.port, limits=SMALL_LIMITS)
    return ClamscanScanner(database=str(EICAR_TEST_DATABASE), limits=SMALL_LIMITS)


def test_file_past_max_file_size_is_not_scannable_not_clean(small_limits_scanner: VirusScanner) -> None:
    data = random.Random(1).randbytes(3 << 19)

    verdict = small_limits_scanner.scan(in_chunks(data, 1 << 16), "big.bin")

    assert not verdict.clean
    assert verdict.signature == "not scannable: limit MaxFileSize"


def test_archive_expanding_past_max_scan_size_is_not_scannable_not_clean(
    small_limits_scanner: VirusScanner,
) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(4):
            archive.writestr(f"part-{index}.bin", bytes(900 << 10))
    assert len(out.getvalue()) < SMALL_LIMITS.max_file_bytes

    verdict = small_limits_scanner.scan([out.getvalue()], "parts.zip")

    assert not verdict.clean
    assert verdict.signature == "not scannable: limit MaxScanSize"


def test_pdf_decoding_past_the_size_limits_is_not_scannable_not_clean(
    small_limits_scanner: VirusScanner,
) -> None:
    document = pikepdf.new()
    document.add_blank_page(page_size=(595, 842))
    document.Root.Bomb = document.make_stream(
        zlib.compress(bytes(3 << 20), 9), Filter=pikepdf.Name.FlateDecode
    )
    out = io.BytesIO()
    document.save(out, compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    assert len(out.getvalue()) < 64 << 10

    verdict = small_limits_scanner.scan([out.getvalue()], "bomb.pdf")

    assert not verdict.clean
    assert verdict.signature is not None
    assert verdict.signature.startswith("not scannable: limit ")


def test_clamscan_of_a_20000_pixel_square_png_of_zeros_stays_under_300_mb(tmp_path: Path) -> None:
    width = height = 20_000
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(bytes(width + 1)) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

    header = struct.pack("!IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = tmp_path / "zeros.png"
    png.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    # Linux keeps a process's peak RSS across fork and exec, so clamscan started by this (large)
    # pytest process would report pytest's peak: a fresh, small interpreter starts it instead, and
    # its ru_maxrss for children (KiB) is then clamscan's own.
    script = textwrap.dedent(
        f"""
        import json, resource
        from pathlib import Path
        from hub_pipelines.resources.media.virus_scanner import ClamscanScanner
        verdict = ClamscanScanner(database={str(EICAR_TEST_DATABASE)!r}).scan([Path({str(png)!r}).read_bytes()], "zeros.png")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps({{"clean": verdict.clean, "peak_kib": peak}}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True)
    measured = json.loads(completed.stdout.strip().splitlines()[-1])

    assert measured["clean"]
    assert measured["peak_kib"] < 300 << 10, measured


def test_production_clamd_conf_is_the_generated_one_with_every_limit_alerting() -> None:
    deployed = (Path(__file__).parents[2] / "deploy" / "clamav" / "clamd.conf").read_text()

    assert deployed == production_clamd_conf()
    options = dict(line.split(" ", 1) for line in deployed.splitlines() if not line.startswith("#"))
    assert options["ScanPDF"] == options["ScanArchive"] == options["AlertExceedsMax"] == "yes"
    limits = ScanLimits()
    assert options["MaxFileSize"] == str(limits.max_file_bytes)
    assert options["MaxScanSize"] == str(limits.max_scan_bytes)
    assert f"--max-filesize={limits.max_file_bytes}" in limits.clamscan_arguments()
    assert "--alert-exceeds-max=yes" in limits.clamscan_arguments()
