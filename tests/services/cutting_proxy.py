"""A TCP proxy that cuts a client's connection at a chosen byte of what the client sends.

For tests of what a server applied when the connection died partway through a request. Once armed,
the proxy forwards the client's bytes up to the cut, then closes the client's side at once and
half-closes the server's (FIN after the forwarded bytes, as a client process that died would), drops
whatever the server answers, and is disarmed: later connections pass through untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class _Cut:
    """Where to cut: after `remaining` more bytes, or at the next `pattern` (its start or its end)."""

    remaining: int | None = None
    pattern: bytes = b""
    after_pattern: bool = False
    seen: bytearray = field(default_factory=bytearray)

    def forwardable(self, data: bytes) -> int | None:
        """How many bytes of `data` go through before the cut; None when the cut is not in `data`."""
        if self.remaining is not None:
            if len(data) < self.remaining:
                self.remaining -= len(data)
                return None
            return self.remaining
        before = len(self.seen)
        self.seen += data
        found = self.seen.find(self.pattern)
        if found < 0:
            del self.seen[: max(0, len(self.seen) - len(self.pattern) + 1)]
            return None
        end = found + (len(self.pattern) if self.after_pattern else 0)
        return max(0, end - before)


class CuttingProxy:
    """Listens on a free loopback port and relays every connection to `target`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut: _Cut | None = None
        self.cuts = 0
        self.request_bytes = 0
        threading.Thread(target=self._accept, name="cutting proxy", daemon=True).start()

    def cut_after_bytes(self, count: int) -> None:
        """Cut once `count` more bytes of requests (on any connection) have gone through."""
        with self._lock:
            self._cut = _Cut(remaining=count)

    def cut_at(self, pattern: bytes, *, after: bool = False) -> None:
        """Cut just before the next `pattern` in the requests, or just after it with `after`."""
        with self._lock:
            self._cut = _Cut(pattern=pattern, after_pattern=after)

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._replies, args=(client, server), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        while data := _received(client):
            with self._lock:
                through = None if self._cut is None else self._cut.forwardable(data)
                if through is not None:
                    self._cut = None
                    self.cuts += 1
                self.request_bytes += len(data) if through is None else through
            if through is None:
                server.sendall(data)
                continue
            server.sendall(data[:through])
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            break
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _replies(self, client: socket.socket, server: socket.socket) -> None:
        while data := _received(server):
            with contextlib.suppress(OSError):
                client.sendall(data)
        server.close()
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        client.close()


def _received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@contextlib.contextmanager
def cutting_proxy(target_host: str, target_port: int) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(target_host, target_port)
    try:
        yield proxy
    finally:
        proxy.close()
