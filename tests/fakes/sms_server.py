"""A Twilio-style SMS API for tests: `POST /2010-04-01/Accounts/{sid}/Messages.json` with basic auth.

Records every accepted message; `fail_next(status)` answers the next requests with that HTTP status.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class FakeSms:
    account_sid: str = "AC_test"
    auth_token: str = "token"
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: deque[int] = deque()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> FakeSms:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, *statuses: int) -> None:
        with self._lock:
            self._failures.extend(statuses)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        expected_auth = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)).decode()
        form = {key: values[0] for key, values in parse_qs(body).items()}
        with self._lock:
            status = self._failures.popleft() if self._failures else None
        if handler.headers.get("Authorization") != expected_auth:
            status = 401
        if handler.path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            status = 404
        if status is None:
            with self._lock:
                self.messages.append(form)
            status, reply = 201, {"sid": f"SM{uuid.uuid4().hex}", "status": "queued", **form}
        else:
            reply = {"code": status, "message": "injected failure", "status": status}
        payload = json.dumps(reply).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
