"""A PDF rewritten as a viewer reads it, for the virus scanner: every stream decoded, no object streams.

ClamAV's own PDF parser misses what a viewer opens: an attachment written by pikepdf (its /Params
dictionary holds a hex-string checksum) stays flate-compressed because ClamAV stops reading the
stream's dictionary before /Filter, so EICAR inside it scanned clean. qpdf (through pikepdf) parses
the file the way viewers do; the copy holds each stream's decoded bytes in the clear and every object
outside an object stream, where any signature matches them as plain bytes.

Decoding a hostile PDF costs what its author chooses, so it runs in a child process
(`decoded_pdf_copy`) under the scan's time limit and a cap on its address space, and the copy stops
at the scan's size limit.
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

if TYPE_CHECKING:
    # Only for the annotation: the child process must start without importing Dagster (seconds).
    from hub_pipelines.resources.media.scan_limits import ScanLimits

PDF_MAGIC = b"%PDF-"
# ClamAV's own rule: a PDF header anywhere in the first 1024 bytes makes the file a PDF to a viewer too.
PDF_HEADER_WINDOW = 1024
# The child's whole address space (Python, qpdf and the open PDF): about 200 MB suffices for any PDF
# within the default limits; what needs more is a bomb.
MAX_DECODER_BYTES = 1 << 30
_COPY_TOO_LARGE = 3
_UNREADABLE = 4
_OUT_OF_MEMORY = 5


def looks_like_pdf(head: bytes) -> bool:
    return PDF_MAGIC in head[:PDF_HEADER_WINDOW]


class _CopyTooLarge(Exception):
    pass


class _CappedFile(io.RawIOBase):
    def __init__(self, path: Path, max_bytes: int) -> None:
        self._file = path.open("wb")
        self._left = max_bytes

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._left -= len(data)
        if self._left < 0:
            raise _CopyTooLarge
        return self._file.write(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def write_decoded_copy(source: Path, destination: Path, max_bytes: int) -> None:
    import pikepdf

    with pikepdf.open(source) as pdf, _CappedFile(destination, max_bytes) as out:
        pdf.save(
            cast(BinaryIO, out),
            compress_streams=False,
            stream_decode_level=pikepdf.StreamDecodeLevel.generalized,
            object_stream_mode=pikepdf.ObjectStreamMode.disable,
            normalize_content=False,
        )


def decoded_pdf_copy(source: Path, destination: Path, limits: ScanLimits) -> str | None:
    """Write the decoded copy; None when written, else why not ('limit MaxScanSize ...', ...).

    The copy is scanned as one more stream, so it must pass every size limit a stream does.
    """
    max_bytes, limit = min(
        (limits.max_scan_bytes, "MaxScanSize"),
        (limits.max_file_bytes, "MaxFileSize"),
        (limits.max_stream_bytes, "StreamMaxLength"),
    )
    try:
        completed = subprocess.run(
            [sys.executable, "-m", __name__, str(source), str(destination), str(max_bytes)],
            capture_output=True,
            text=True,
            timeout=limits.max_scan_time_ms / 1000,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "limit MaxScanTime (decoding the PDF)"
    if completed.returncode == 0:
        return None
    if completed.returncode == _COPY_TOO_LARGE:
        return f"limit {limit} (the decoded PDF passes {max_bytes} bytes)"
    if completed.returncode == _OUT_OF_MEMORY:
        return f"limit memory (decoding the PDF needs more than {MAX_DECODER_BYTES} bytes)"
    detail = completed.stderr.strip().splitlines()[-1:] or [f"exit code {completed.returncode}"]
    return f"unreadable PDF ({detail[0]})"


def _main(source: str, destination: str, max_bytes: str) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (MAX_DECODER_BYTES, MAX_DECODER_BYTES))
    import pikepdf

    try:
        write_decoded_copy(Path(source), Path(destination), int(max_bytes))
    except _CopyTooLarge:
        return _COPY_TOO_LARGE
    except MemoryError:
        return _OUT_OF_MEMORY
    except pikepdf.PdfError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return _UNREADABLE
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:4]))
