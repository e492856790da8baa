"""The processes waiting for a chdb data folder, first come first served.

chdb opens a folder from one process at a time. A process that wants the folder while another holds it
places a marker in the folder's waiting line (a directory beside the folder, `<folder>.waiting`): one
file per waiting process, named by the time it joined (the system-wide monotonic clock), holding its
pid and a name for people (a run's id). The process holding the folder looks at the line between its own units of work (one directory
listing) and, when someone waits, lends the folder: it closes its session and joins the line's end
itself, so those before it go first and those after it wait for its turn (no starvation either way).

A marker is live while its process holds an exclusive `flock` on it, as chdb's own `status` lock is
held: the kernel drops the lock when the process exits, killed or not, so a dead waiter's marker is
known stale by trying the lock and is removed by whoever finds it. A marker is written under a
temporary dot-name, locked, then renamed into the line, so no one ever sees a live marker unlocked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Waiter:
    """One live process in the line."""

    marker: str
    pid: int
    name: str

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})" if self.name else f"pid {self.pid}"


def _locked_elsewhere(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return True
    return False


@dataclass(frozen=True)
class WaitingLine:
    """The waiting line of one data folder."""

    directory: Path

    @classmethod
    def of(cls, folder: Path) -> WaitingLine:
        return cls(folder.with_name(f"{folder.name}.waiting"))

    def waiting(self) -> list[Waiter]:
        """The live waiters, first come first; markers of dead processes are removed on the way."""
        try:
            names = sorted(name for name in os.listdir(self.directory) if not name.startswith("."))
        except FileNotFoundError:
            return []
        live = []
        for name in names:
            waiter = self._live(name)
            if waiter is not None:
                live.append(waiter)
        return live

    def _live(self, name: str) -> Waiter | None:
        path = self.directory / name
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        with handle:
            if not _locked_elsewhere(handle):
                # Its process is gone (the kernel dropped its lock): nobody waits behind this marker.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return None
            content = json.loads(handle.read() or b"{}")
        return Waiter(name, int(content.get("pid", 0)), str(content.get("name", "")))

    @contextlib.contextmanager
    def joined(self, name: str) -> Iterator[str]:
        """Stand in the line (as `name`, or as a pid when it has none) until the block ends; yields this
        process's marker."""
        self.directory.mkdir(parents=True, exist_ok=True)
        marker = f"{time.monotonic_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temporary = self.directory / f".{marker}"
        handle = temporary.open("w+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(json.dumps({"pid": os.getpid(), "name": name}).encode())
            handle.flush()
            os.rename(temporary, self.directory / marker)
            try:
                yield marker
            finally:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / marker).unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            handle.close()

    def ahead_of(self, marker: str) -> list[Waiter]:
        """The live waiters of other processes that joined before `marker` (this process's own do not
        wait for it: its sessions share one engine)."""
        return [w for w in self.waiting() if w.marker < marker and w.pid != os.getpid()]
