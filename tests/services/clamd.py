"""clamd, ClamAV's daemon, loaded with the EICAR test database the package ships.

Fixture `clamd_server` yields a `ClamdAddress`. Set HUB_TEST_CLAMD=host:port to use a running clamd
instead (it must detect the EICAR test string and run with `ScanLimits()`'s settings). `start_clamd`
starts further daemons with other limits (a small StreamMaxLength, say). Every clamd here gets its
clamd.conf from `ScanLimits.clamd_conf`, the generator of production's `deploy/clamav/clamd.conf`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub_pipelines.resources.media.scan_limits import ScanLimits
from hub_pipelines.resources.media.virus_scanner import EICAR_TEST_DATABASE
from tests.services import free_port, require_binary, start_process, stop_process, wait_until

CLAMD_INSTALL = "apt-get install -y clamav clamav-daemon"


@dataclass(frozen=True)
class ClamdAddress:
    host: str
    port: int
    unix_socket: str | None = None


def clamd_answers_ping(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(b"zPING\0")
        return sock.recv(16).rstrip(b"\0\n") == b"PONG"


@contextlib.contextmanager
def start_clamd(folder: Path, limits: ScanLimits | None = None) -> Iterator[ClamdAddress]:
    """A clamd on a free loopback port and a unix socket in `folder`, stopped on exit."""
    clamd = require_binary("clamd", install=CLAMD_INSTALL, search=["/usr/sbin"])
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    local_socket = folder / "clamd.sock"
    config = folder / "clamd.conf"
    deployment = {
        "TCPSocket": str(port),
        "TCPAddr": "127.0.0.1",
        "LocalSocket": str(local_socket),
        "DatabaseDirectory": str(EICAR_TEST_DATABASE),
        "Foreground": "yes",
        "LogFile": str(folder / "clamd.log"),
        "TemporaryDirectory": str(folder),
    }
    config.write_text((limits or ScanLimits()).clamd_conf(deployment))
    process = start_process([clamd, "-c", str(config)], folder / "clamd.out")
    try:
        wait_until(lambda: clamd_answers_ping("127.0.0.1", port), "clamd", timeout=60, process=process)
        yield ClamdAddress(host="127.0.0.1", port=port, unix_socket=str(local_socket))
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdAddress]:
    existing = os.environ.get("HUB_TEST_CLAMD")
    if existing:
        host, _, port = existing.rpartition(":")
        yield ClamdAddress(host=host, port=int(port))
        return
    with start_clamd(tmp_path_factory.mktemp("clamd")) as address:
        yield address
