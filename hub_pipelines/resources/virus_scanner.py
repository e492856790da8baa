"""Virus scanning: ClamAV's daemon in production, its command-line scanner locally.

Both implement `VirusScanner`. ClamAV cannot download signatures everywhere we run (CI, the local
demo), so a one-signature database that detects the EICAR test string anywhere in a stream, archives
included, ships in `clamav/` beside this module: point `database` (clamscan) or clamd's
`DatabaseDirectory` at `EICAR_TEST_DATABASE` there. ClamAV reports signatures from such unsigned
databases with a `.UNOFFICIAL` suffix (`Eicar-Test-Signature.UNOFFICIAL`).
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
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import ScannerUnavailable, ScanTooLarge, ScanVerdict

EICAR_TEST_DATABASE = Path(__file__).parent / "clamav"
DEFAULT_MAX_STREAM_BYTES = 100 * 1024 * 1024
CLAMAV_INSTALL = "apt-get install -y clamav"

_FOUND_REPLY = re.compile(r"^stream: (?P<signature>.+) FOUND$")
_SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"


class ScannerNotInstalled(RuntimeError):
    """The scanner's program is not installed on this machine; retrying will not help."""


def _too_large(name: str, limit: int) -> ScanTooLarge:
    return ScanTooLarge(f"cannot scan '{name}': larger than the scanner's limit of {limit} bytes")


def _limited(chunks: Iterable[bytes], name: str, limit: int, piece: int) -> Iterator[bytes]:
    """The stream re-cut into pieces of at most `piece` bytes, raising before yielding past `limit`."""
    total = 0
    for chunk in chunks:
        for start in range(0, len(chunk), piece):
            part = chunk[start : start + piece]
            total += len(part)
            if total > limit:
                raise _too_large(name, limit)
            yield part


class ClamdScanner(dg.ConfigurableResource):
    """clamd, ClamAV's daemon, reached over TCP (host, port) or a unix socket.

    Speaks INSTREAM directly: the PyPI clients (clamd, clamdpy, clamav-client) read a file object
    with their own loop, give no whole-call deadline, and when clamd stops reading at its
    StreamMaxLength they raise a bare broken-pipe error and lose clamd's size-limit reply, which
    must become ScanTooLarge (not retryable) rather than ScannerUnavailable (retryable).
    """

    host: str = "127.0.0.1"
    port: int = 3310
    unix_socket: str | None = None
    timeout_seconds: float = 30.0
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES
    chunk_bytes: int = 64 * 1024

    @property
    def address(self) -> str:
        return self.unix_socket or f"{self.host}:{self.port}"

    def scan(self, chunks: Iterable[bytes], name: str) -> ScanVerdict:
        deadline = time.monotonic() + self.timeout_seconds
        sent = 0
        try:
            with self._connect(deadline) as sock:
                self._send(sock, b"zINSTREAM\0", deadline)
                try:
                    for part in _limited(chunks, name, self.max_stream_bytes, self.chunk_bytes):
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
            return ScanVerdict(clean=False, signature=found["signature"], scanner="clamd", scanned_bytes=sent)
        if reply.startswith(_SIZE_LIMIT_REPLY):
            raise ScanTooLarge(f"cannot scan '{name}': clamd at {self.address} refused it: {reply}")
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
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES
    _program: str | None = PrivateAttr(default=None)

    def scan(self, chunks: Iterable[bytes], name: str) -> ScanVerdict:
        program = self._resolve_program()
        with tempfile.TemporaryDirectory(prefix="hub-scan-") as folder:
            # The upload's own name never becomes a path: it is untrusted input.
            path = Path(folder) / "stream"
            written = 0
            with path.open("wb") as out:
                for part in _limited(chunks, name, self.max_stream_bytes, 1 << 20):
                    out.write(part)
                    written += len(part)
            completed = self._run(program, path, name)
        if completed.returncode == 0:
            return ScanVerdict(clean=True, signature=None, scanner="clamscan", scanned_bytes=written)
        if completed.returncode == 1:
            prefix = f"{path}: "
            for line in completed.stdout.splitlines():
                if line.startswith(prefix) and line.endswith(" FOUND"):
                    signature = line[len(prefix) : -len(" FOUND")]
                    return ScanVerdict(
                        clean=False, signature=signature, scanner="clamscan", scanned_bytes=written
                    )
        detail = (completed.stderr or completed.stdout).strip()
        raise ScannerUnavailable(
            f"clamscan could not scan '{name}' (exit code {completed.returncode}): {detail}"
        )

    def _run(self, program: str, path: Path, name: str) -> subprocess.CompletedProcess[str]:
        # clamscan's own size limits default to 100 MB and skip what they exceed without saying
        # so; matching them to ours keeps everything we accept fully scanned.
        args = [
            program,
            "--no-summary",
            "--infected",
            f"--max-filesize={self.max_stream_bytes}",
            f"--max-scansize={self.max_stream_bytes}",
        ]
        if self.database:
            args.append(f"--database={self.database}")
        args.append(str(path))
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
