"""Virus scanning: ClamAV's daemon in production, its command-line scanner locally.

Both implement `VirusScanner` with the same `ScanLimits` (scan_limits.py: the switches and limits
that also render clamd.conf). A stream is clean only when scanned in full: one that passes a limit,
ClamAV's (reported as `Heuristics.Limits.Exceeded.<limit>` under `AlertExceedsMax`) or the client's
own stream cut, gets the verdict "not scannable: limit <limit>". A PDF is scanned twice: as sent, and
as a viewer reads it (`pdf_decoded_copy`: every stream decoded), since ClamAV's PDF parser misses
compressed attachments a viewer opens.

ClamAV cannot download signatures everywhere we run (CI, the local demo), so a one-signature database
that detects the EICAR test string anywhere in a stream, archives included, ships in `clamav/` beside
this module: point `database` (clamscan) or clamd's `DatabaseDirectory` at `EICAR_TEST_DATABASE`
there. ClamAV reports signatures from such unsigned databases with a `.UNOFFICIAL` suffix
(`Eicar-Test-Signature.UNOFFICIAL`).
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import NOT_SCANNABLE, ScannerUnavailable, ScanVerdict
from hub_pipelines.resources.media.pdf_decoded_copy import PDF_HEADER_WINDOW, decoded_pdf_copy, looks_like_pdf
from hub_pipelines.resources.media.scan_limits import CLAMAV_LIMIT_SIGNATURE, ScanLimits

EICAR_TEST_DATABASE = Path(__file__).parent / "clamav"
CLAMAV_INSTALL = "apt-get install -y clamav"

_FOUND_REPLY = re.compile(r"^stream: (?P<signature>.+) FOUND$")
_SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"
_READ_SIZE = 1 << 20


class ScannerNotInstalled(RuntimeError):
    """The scanner's program is not installed on this machine; retrying will not help."""


def _signature_verdict(signature: str, scanner: str, scanned_bytes: int) -> ScanVerdict:
    if signature.startswith(CLAMAV_LIMIT_SIGNATURE):
        signature = f"{NOT_SCANNABLE}limit {signature.removeprefix(CLAMAV_LIMIT_SIGNATURE)}"
    return ScanVerdict(clean=False, signature=signature, scanner=scanner, scanned_bytes=scanned_bytes)


def _not_scannable(reason: str, scanner: str, scanned_bytes: int) -> ScanVerdict:
    return ScanVerdict(
        clean=False, signature=f"{NOT_SCANNABLE}{reason}", scanner=scanner, scanned_bytes=scanned_bytes
    )


class _StreamLimitExceeded(Exception):
    pass


@dataclass
class _Intake:
    """The stream re-cut into pieces of at most `piece` bytes, stopped before it passes `limit`;
    `is_pdf` once it starts like a PDF, which is then also kept in `pdf_path` when one is given."""

    pdf_path: Path | None
    limit: int
    piece: int
    taken: int = 0
    is_pdf: bool = False

    def pieces(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        undecided: list[bytes] | None = []
        kept: IO[bytes] | None = None
        try:
            for chunk in chunks:
                if undecided is not None:
                    undecided.append(chunk)
                    head = b"".join(undecided)[:PDF_HEADER_WINDOW]
                    if looks_like_pdf(head):
                        self.is_pdf = True
                        if self.pdf_path is not None:
                            kept = self.pdf_path.open("wb")
                            kept.writelines(undecided)
                        undecided = None
                    elif len(head) >= PDF_HEADER_WINDOW:
                        undecided = None
                elif kept is not None:
                    kept.write(chunk)
                for start in range(0, len(chunk), self.piece):
                    part = chunk[start : start + self.piece]
                    if self.taken + len(part) > self.limit:
                        raise _StreamLimitExceeded
                    self.taken += len(part)
                    yield part
        finally:
            if kept is not None:
                kept.close()


class ClamdScanner(dg.ConfigurableResource):
    """clamd, ClamAV's daemon, reached over TCP (host, port) or a unix socket.

    clamd must run with the same `limits` (its clamd.conf rendered by `ScanLimits.clamd_conf`): the
    client cuts a stream at `max_stream_bytes` as clamd would. Speaks INSTREAM directly: the PyPI
    clients (clamd, clamdpy, clamav-client) read a file object with their own loop, give no
    whole-call deadline, and when clamd stops reading at its StreamMaxLength they raise a bare
    broken-pipe error and lose clamd's size-limit reply, which must become a "not scannable" verdict
    rather than ScannerUnavailable (retryable). `timeout_seconds` bounds each INSTREAM call.
    """

    host: str = "127.0.0.1"
    port: int = 3310
    unix_socket: str | None = None
    timeout_seconds: float = 60.0
    limits: ScanLimits = ScanLimits()
    chunk_bytes: int = 64 * 1024

    @property
    def address(self) -> str:
        return self.unix_socket or f"{self.host}:{self.port}"

    def scan(self, chunks: Iterable[bytes], name: str) -> ScanVerdict:
        with tempfile.TemporaryDirectory(prefix="hub-scan-") as folder:
            upload = Path(folder) / "upload.pdf"
            intake = _Intake(upload, self.limits.max_stream_bytes, self.chunk_bytes)
            try:
                verdict = self._scan_stream(intake.pieces(chunks), name)
            except _StreamLimitExceeded:
                limit = self.limits.max_stream_bytes
                return _not_scannable(f"limit StreamMaxLength ({limit} bytes)", "clamd", intake.taken)
            if not verdict.clean or not intake.is_pdf:
                return verdict
            decoded = Path(folder) / "decoded.pdf"
            problem = decoded_pdf_copy(upload, decoded, self.limits)
            if problem:
                return _not_scannable(problem, "clamd", verdict.scanned_bytes)
            with decoded.open("rb") as file:
                inner = self._scan_stream(iter(lambda: file.read(_READ_SIZE), b""), f"{name} (decoded PDF)")
        if inner.clean:
            return verdict
        return ScanVerdict(
            clean=False, signature=inner.signature, scanner="clamd", scanned_bytes=verdict.scanned_bytes
        )

    def _scan_stream(self, pieces: Iterator[bytes], name: str) -> ScanVerdict:
        deadline = time.monotonic() + self.timeout_seconds
        sent = 0
        try:
            with self._connect(deadline) as sock:
                self._send(sock, b"zINSTREAM\0", deadline)
                try:
                    for part in pieces:
                        self._send(sock, struct.pack("!L", len(part)) + part, deadline)
                        sent += len(part)
                    self._send(sock, struct.pack("!L", 0), deadline)
                except (BrokenPipeError, ConnectionResetError):
                    # clamd stops reading and answers early when the stream passes its own limit.
                    pass
                reply = self._receive(sock, deadline)
        except (TimeoutError, OSError) as error:
            raise ScannerUnavailable(
                f"clamd at {self.address} could not scan '{name}': {error or type(error).__name__}"
            ) from error
        return self._verdict(reply, name, sent)

    def ping(self) -> bool:
        """True when clamd answers PONG."""
        deadline = time.monotonic() + self.timeout_seconds
        try:
            with self._connect(deadline) as sock:
                self._send(sock, b"zPING\0", deadline)
                return self._receive(sock, deadline) == "PONG"
        except OSError:
            return False

    def _connect(self, deadline: float) -> socket.socket:
        if self.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.unix_socket
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (self.host, self.port)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
        sock.settimeout(_remaining(deadline))
        sock.sendall(data)

    @staticmethod
    def _receive(sock: socket.socket, deadline: float) -> str:
        reply = bytearray()
        while not reply.endswith(b"\0"):
            sock.settimeout(_remaining(deadline))
            data = sock.recv(4096)
            if not data:
                break
            reply += data
        return reply.rstrip(b"\0\n").decode("utf-8", errors="replace").strip()

    def _verdict(self, reply: str, name: str, sent: int) -> ScanVerdict:
        if reply == "stream: OK":
            return ScanVerdict(clean=True, signature=None, scanner="clamd", scanned_bytes=sent)
        found = _FOUND_REPLY.match(reply)
        if found:
            return _signature_verdict(found["signature"], "clamd", sent)
        if reply.startswith(_SIZE_LIMIT_REPLY):
            return _not_scannable(f"limit StreamMaxLength (clamd at {self.address}: {reply})", "clamd", sent)
        raise ScannerUnavailable(
            f"clamd at {self.address} could not scan '{name}': {reply or 'connection closed without a reply'}"
        )


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


class ClamscanScanner(dg.ConfigurableResource):
    """ClamAV's command-line scanner run on a temporary copy of the stream; for local runs.

    `database` is a signature folder (for example `EICAR_TEST_DATABASE`); unset, clamscan uses its
    system database, which stays empty until freshclam has downloaded signatures.
    """

    database: str | None = None
    executable: str = "clamscan"
    timeout_seconds: float = 120.0
    limits: ScanLimits = ScanLimits()
    _program: str | None = PrivateAttr(default=None)

    def scan(self, chunks: Iterable[bytes], name: str) -> ScanVerdict:
        program = self._resolve_program()
        with tempfile.TemporaryDirectory(prefix="hub-scan-") as folder:
            # The upload's own name never becomes a path: it is untrusted input.
            path = Path(folder) / "stream"
            intake = _Intake(None, self.limits.max_stream_bytes, _READ_SIZE)
            try:
                with path.open("wb") as out:
                    out.writelines(intake.pieces(chunks))
            except _StreamLimitExceeded:
                limit = self.limits.max_stream_bytes
                return _not_scannable(f"limit StreamMaxLength ({limit} bytes)", "clamscan", intake.taken)
            paths = [path]
            if intake.is_pdf:
                decoded = Path(folder) / "decoded"
                problem = decoded_pdf_copy(path, decoded, self.limits)
                if problem:
                    return _not_scannable(problem, "clamscan", intake.taken)
                paths.append(decoded)
            completed = self._run(program, paths, name)
        if completed.returncode == 0:
            return ScanVerdict(clean=True, signature=None, scanner="clamscan", scanned_bytes=intake.taken)
        if completed.returncode == 1:
            for line in completed.stdout.splitlines():
                for scanned in paths:
                    prefix = f"{scanned}: "
                    if line.startswith(prefix) and line.endswith(" FOUND"):
                        signature = line[len(prefix) : -len(" FOUND")]
                        return _signature_verdict(signature, "clamscan", intake.taken)
        detail = (completed.stderr or completed.stdout).strip()
        raise ScannerUnavailable(
            f"clamscan could not scan '{name}' (exit code {completed.returncode}): {detail}"
        )

    def _run(self, program: str, paths: list[Path], name: str) -> subprocess.CompletedProcess[str]:
        args = [program, "--no-summary", "--infected", *self.limits.clamscan_arguments()]
        if self.database:
            args.append(f"--database={self.database}")
        args.extend(str(path) for path in paths)
        try:
            return subprocess.run(
                args, capture_output=True, text=True, timeout=self.timeout_seconds, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise ScannerUnavailable(
                f"clamscan did not finish scanning '{name}' within {self.timeout_seconds:g} s"
            ) from error

    def _resolve_program(self) -> str:
        if self._program is None:
            found = shutil.which(self.executable)
            if found is None:
                raise ScannerNotInstalled(
                    f"'{self.executable}' is not installed; install it with: {CLAMAV_INSTALL}"
                )
            self._program = found
        return self._program
