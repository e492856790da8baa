"""Real servers for the test suite, started on free loopback ports in temporary folders and stopped after.

Each service lives in its own module of this package as a session-scoped pytest fixture, registered
in `tests/conftest.py`. Every fixture can be pointed at an existing server instead through the
environment variable its module names. A missing binary fails the test loudly with the command that
installs it: the suite never skips a service.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


class ServiceMissing(RuntimeError):
    """A binary a real-service test needs is not installed."""


def require_binary(name: str, install: str, search: Sequence[str] = ()) -> str:
    """The path of `name`, or fail with the command that installs it."""
    found = shutil.which(name)
    if found:
        return found
    for folder in search:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed; install it with: {install}", pytrace=False)
    raise ServiceMissing(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    ready: Callable[[], bool], what: str, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    """Poll `ready` until it holds; fail with the process's output if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def start_process(args: Sequence[str], log_path: Path, **kwargs) -> subprocess.Popen:
    """Start a server in its own process group, its output in log_path."""
    log = open(log_path, "ab")  # noqa: SIM115 - the process owns the handle until stop_process
    return subprocess.Popen(
        list(args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
    )


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the process group: SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
