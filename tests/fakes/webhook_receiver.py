"""A webhook receiver for tests: records every POST (headers and body) and can answer with failures first.

`fail_next(status, times)` makes the next `times` requests get `status` (503, say) before normal 200s;
`always_fail(status)` answers every request with it. `received` lists what arrived, failed tries
included, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class WebhookReceiver:
    url: str = ""
    received: list[ReceivedRequest] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _always: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, times: int) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def always_fail(self, status: int) -> None:
        self._always = status

    def answer_for(self) -> int:
        with self._lock:
            if self._always is not None:
                return self._always
            return self._failures.pop(0) if self._failures else 200

    def accepted(self) -> list[ReceivedRequest]:
        return [request for request in self.received if request.answered == 200]


@contextmanager
def running_webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer_for()
            receiver.received.append(ReceivedRequest(self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/media"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
