"""A Stripe-compatible PaymentIntents server for tests, with Stripe's idempotency rules and injectable faults.

Idempotency (https://docs.stripe.com/api/idempotent_requests): the first request with a key saves its
status and body; the same key with the same parameters replays them (errors included, with
`Idempotent-Replayed: true`); the same key with different parameters gets 400 `idempotency_error`;
the same key while the first request is still executing gets 409. A 5xx injected *before* the
endpoint executes is not saved, as Stripe does for requests it never started (and it says
`Stripe-Should-Retry: true`).

Faults (`Faults`): latency on every request, 5xx before execution, "timeout after charge" (the charge
is recorded and its response saved, then the connection is held for `stall_s` and closed without an
answer: the client times out not knowing), and declines (also for the real test token
`pm_card_chargeDeclined`). `fail_next` queues exact faults for deterministic tests.

Point the SDK at it with `StripeClient(key, base_addresses={"api": server.base_url})`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

ERROR = "error"
STALL = "stall"
DECLINE = "decline"


@dataclass
class Faults:
    latency_s: float = 0.0
    error_rate: float = 0.0
    timeout_after_charge_rate: float = 0.0
    decline_rate: float = 0.0
    stall_s: float = 1.5
    seed: int = 7


@dataclass
class _Saved:
    params: list[tuple[str, str]]
    done: bool = False
    status: int = 0
    body: bytes = b""


class _Server(ThreadingHTTPServer):
    # The constructor already listens: a backlog set on the instance afterwards is never used, and
    # the default of 5 drops the SYNs of many clients connecting at once (retried after 1, 3, 7 s...).
    request_queue_size = 256
    daemon_threads = True


@dataclass
class FakeStripe:
    faults: Faults = field(default_factory=Faults)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    replays: int = 0
    conflicts: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: dict[str, _Saved] = {}
        self._queued: deque[str] = deque()
        self._rng = random.Random(self.faults.seed)
        self._server: ThreadingHTTPServer | None = None
        self._stalls: list[threading.Event] = []

    def start(self, port: int = 0) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as Stripe's API: a client reuses its connections. The headers and the body
            # are two writes; with Nagle's algorithm on, the body would wait for the client's
            # delayed ACK (40 ms) on a kept-alive connection.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle_post(self)

            def do_GET(self) -> None:
                fake._handle_get(self)

        self._server = _Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for stall in self._stalls:
            stall.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, *faults: str) -> None:
        """Queue exact faults ('error', 'stall', 'decline') for the next requests, in order."""
        with self._lock:
            self._queued.extend(faults)

    def succeeded_intents(self, order_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                intent
                for intent in self.intents.values()
                if intent["status"] == "succeeded"
                and (order_id is None or intent["metadata"].get("order_id") == order_id)
            ]

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._queued:
                return self._queued.popleft()
            roll = self._rng.random()
        faults = self.faults
        if roll < faults.error_rate:
            return ERROR
        roll -= faults.error_rate
        if roll < faults.timeout_after_charge_rate:
            return STALL
        roll -= faults.timeout_after_charge_rate
        if roll < faults.decline_rate:
            return DECLINE
        return None

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        params = sorted(parse_qsl(handler.rfile.read(length).decode(), keep_blank_values=True))
        key = handler.headers.get("Idempotency-Key") or str(uuid.uuid4())
        if handler.path.rstrip("/") != "/v1/payment_intents":
            self._respond(handler, 404, _error("invalid_request_error", f"no such route {handler.path}"))
            return
        with self._lock:
            self.requests += 1
            saved = self._saved.get(key)
            if saved is not None and saved.params != params:
                self._respond(
                    handler,
                    400,
                    _error(
                        "idempotency_error",
                        f"Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}'.",
                    ),
                )
                return
            if saved is not None and not saved.done:
                self.conflicts += 1
                self._respond(
                    handler,
                    409,
                    _error(
                        "idempotency_error", "There is currently another in-progress request using this key"
                    ),
                )
                return
            if saved is not None:
                self.replays += 1
                self._respond(handler, saved.status, saved.body, replayed=True)
                return
            saved = self._saved[key] = _Saved(params)
        if self.faults.latency_s:
            time.sleep(self.faults.latency_s)
        fault = self._next_fault()
        if fault == ERROR:
            with self._lock:
                del self._saved[key]
            self._respond(handler, 500, _error("api_error", "injected server error"), should_retry=True)
            return
        status, body = self._execute(dict(params), declined=fault == DECLINE)
        with self._lock:
            saved.status, saved.body, saved.done = status, body, True
        if fault == STALL:
            stall = threading.Event()
            self._stalls.append(stall)
            stall.wait(self.faults.stall_s)
            handler.close_connection = True
            return
        self._respond(handler, status, body)

    def _execute(self, params: dict[str, str], declined: bool) -> tuple[int, bytes]:
        intent_id = f"pi_{uuid.uuid4().hex[:24]}"
        declined = declined or params.get("payment_method") == "pm_card_chargeDeclined"
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(params.get("amount", "0")),
            "currency": params.get("currency"),
            "status": "requires_payment_method" if declined else "succeeded",
            "payment_method": params.get("payment_method"),
            "metadata": {k[len("metadata[") : -1]: v for k, v in params.items() if k.startswith("metadata[")},
            "latest_charge": None if declined else f"ch_{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "livemode": False,
        }
        if declined:
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "message": "Your card was declined.",
            }
        with self._lock:
            self.intents[intent_id] = intent
        if declined:
            error = _error("card_error", "Your card was declined.", code="card_declined")
            payload = json.loads(error)
            payload["error"]["decline_code"] = "generic_decline"
            payload["error"]["payment_intent"] = intent
            return 402, json.dumps(payload).encode()
        return 200, json.dumps(intent).encode()

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        prefix = "/v1/payment_intents/"
        intent = self.intents.get(handler.path[len(prefix) :]) if handler.path.startswith(prefix) else None
        if intent is None:
            self._respond(
                handler, 404, _error("invalid_request_error", f"No such payment_intent: {handler.path}")
            )
            return
        self._respond(handler, 200, json.dumps(intent).encode())

    @staticmethod
    def _respond(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        *,
        replayed: bool = False,
        should_retry: bool = False,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
        if replayed:
            handler.send_header("Idempotent-Replayed", "true")
        if should_retry:
            handler.send_header("Stripe-Should-Retry", "true")
        handler.end_headers()
        handler.wfile.write(body)


def _error(kind: str, message: str, code: str | None = None) -> bytes:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return json.dumps({"error": error}).encode()


def main() -> None:
    """Serve the fake on a port until killed: `python -m tests.fakes.stripe_server PORT [LATENCY_S]`."""
    import sys

    port = int(sys.argv[1])
    FakeStripe(Faults(latency_s=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)).start(port)
    threading.Event().wait()


if __name__ == "__main__":
    main()
