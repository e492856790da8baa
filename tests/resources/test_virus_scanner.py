"""One behavioural suite for both virus scanners: clamd (a real daemon) and clamscan."""

from __future__ import annotations

import io
import socket
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from hub_pipelines.core.ports import ScannerUnavailable, ScanTooLarge, VirusScanner
from hub_pipelines.resources.virus_scanner import (
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


def test_stream_over_the_limit_raises_scan_too_large_without_reading_further(
    make_scanner: ScannerFactory,
) -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for index in range(100):
            pulled.append(index)
            yield b"x" * 600

    with pytest.raises(ScanTooLarge, match=r"huge\.bin"):
        make_scanner(max_stream_bytes=1000).scan(chunks(), "huge.bin")
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
    with start_clamd(tmp_path_factory.mktemp("clamd-small"), stream_max_length="1M") as address:
        yield address


def test_clamd_own_stream_limit_raises_scan_too_large(clamd_with_one_megabyte_limit: ClamdAddress) -> None:
    server = clamd_with_one_megabyte_limit
    scanner = ClamdScanner(host=server.host, port=server.port)

    with pytest.raises(ScanTooLarge, match=r"big\.bin.*size limit exceeded"):
        scanner.scan(in_chunks(b"y" * (3 << 20), 1 << 16), "big.bin")


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
