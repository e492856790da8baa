"""A Stripe-compatible PaymentIntents server for tests, with Stripe's idempotency rules and injectable faults.

Idempotency (https://docs.stripe.com/api/idempotent_requests): once the endpoint has begun executing,
the status and body of the first request with a key are saved; the same key with the same parameters
replays them (500s included, with `Idempotent-Replayed: true`); the same key with different parameters
gets 400 `idempotency_error`; the same key while the first request is still executing gets 409 and
nothing is saved. A request that fails validation (a required parameter missing) gets 400
`parameter_missing` and nothing is saved; a request whose body never fully arrived (the client died
mid-send) is not executed at all. A 5xx *before* the endpoint executes is not saved (and says
`Stripe-Should-Retry: true`). Saved keys are pruned once `key_ttl_s` (24 h) old: the same key then
makes a new request. `age_keys` moves the clock of the saved keys forward.

Search (https://docs.stripe.com/api/payment_intents/search): `GET /v1/payment_intents/search` with
`metadata['k']:'v'` and `status:'v'` clauses joined by AND. Stripe's search is eventually consistent;
`pause_indexing` keeps new PaymentIntents out of the results until `resume_indexing`.

Faults (`Faults`): latency on every request; 5xx before execution; 5xx after execution, with the
charge made ("error_after_charge") or not ("error_in_execution"), saved and replayed for the key as
Stripe does; "timeout after charge" (the charge is recorded and its response saved, then the
connection is held for `stall_s` and closed without an answer: the client times out not knowing);
and declines (also for the real test token `pm_card_chargeDeclined`). `fail_next` queues exact
faults for deterministic tests.

Point the SDK at it with `StripeClient(key, base_addresses={"api": server.base_url})`.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

ERROR = "error"
ERROR_AFTER_CHARGE = "error_after_charge"
ERROR_IN_EXECUTION = "error_in_execution"
STALL = "stall"
DECLINE = "decline"
KEY_TTL_S = 24 * 3600.0
REQUIRED_PARAMS = ("amount", "currency")
SEARCH_CLAUSE = re.compile(r"""\s*(?:metadata\['([^']+)'\]|(status)):'((?:[^'\\]|\\.)*)'\s*""")


@dataclass
class Faults:
    latency_s: float = 0.0
    error_rate: float = 0.0
    error_after_charge_rate: float = 0.0
    error_in_execution_rate: float = 0.0
    timeout_after_charge_rate: float = 0.0
    decline_rate: float = 0.0
    stall_s: float = 1.5
    seed: int = 7


@dataclass
class _Saved:
    params: list[tuple[str, str]]
    saved_at: float
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
    searches: int = 0
    key_ttl_s: float = KEY_TTL_S
    on_charge: Callable[[dict[str, Any]], None] | None = None
    """Called with each PaymentIntent made, before its answer is sent (tests act at that moment)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: dict[str, _Saved] = {}
        self._queued: deque[str] = deque()
        self._rng = random.Random(self.faults.seed)
        self._server: ThreadingHTTPServer | None = None
        self._stalls: list[threading.Event] = []
        self._indexing = True
        self._unindexed: set[str] = set()

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
        """Queue exact faults (ERROR, ERROR_AFTER_CHARGE, ERROR_IN_EXECUTION, STALL, DECLINE) for the
        next POSTs, in order."""
        with self._lock:
            self._queued.extend(faults)

    def age_keys(self, seconds: float) -> None:
        """As if `seconds` had passed for every saved idempotency key."""
        with self._lock:
            for saved in self._saved.values():
                saved.saved_at -= seconds

    def pause_indexing(self) -> None:
        """Search lags: PaymentIntents made from now on are not found until `resume_indexing`."""
        with self._lock:
            self._indexing = False

    def resume_indexing(self) -> None:
        with self._lock:
            self._indexing = True
            self._unindexed.clear()

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
        if roll < faults.error_after_charge_rate:
            return ERROR_AFTER_CHARGE
        roll -= faults.error_after_charge_rate
        if roll < faults.error_in_execution_rate:
            return ERROR_IN_EXECUTION
        roll -= faults.error_in_execution_rate
        if roll < faults.timeout_after_charge_rate:
            return STALL
        roll -= faults.timeout_after_charge_rate
        if roll < faults.decline_rate:
            return DECLINE
        return None

    def _handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        if len(body) < length:
            # The client went away mid-request (killed between its headers and its body): an HTTP
            # server never hands an incomplete request to the API, so nothing executes or is saved.
            handler.close_connection = True
            return
        params = sorted(parse_qsl(body.decode(), keep_blank_values=True))
        key = handler.headers.get("Idempotency-Key") or str(uuid.uuid4())
        if handler.path.rstrip("/") != "/v1/payment_intents":
            self._respond(handler, 404, _error("invalid_request_error", f"no such route {handler.path}"))
            return
        given = {name for name, _ in params}
        missing = [name for name in REQUIRED_PARAMS if name not in given]
        if missing:
            # Validation fails before the endpoint executes: Stripe saves no result for the key.
            self._respond(
                handler,
                400,
                _error(
                    "invalid_request_error",
                    f"Missing required param: {missing[0]}.",
                    code="parameter_missing",
                ),
            )
            return
        with self._lock:
            self.requests += 1
            saved = self._saved.get(key)
            if saved is not None and saved.done and time.time() - saved.saved_at >= self.key_ttl_s:
                del self._saved[key]
                saved = None
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
            saved = self._saved[key] = _Saved(params, saved_at=time.time())
        if self.faults.latency_s:
            time.sleep(self.faults.latency_s)
        fault = self._next_fault()
        if fault == ERROR:
            with self._lock:
                del self._saved[key]
            self._respond(handler, 500, _error("api_error", "injected server error"), should_retry=True)
            return
        if fault == ERROR_IN_EXECUTION:
            status, body = 500, _error("api_error", "injected server error during execution")
        else:
            status, body = self._execute(dict(params), declined=fault == DECLINE)
        if fault == ERROR_AFTER_CHARGE:
            status, body = 500, _error("api_error", "injected server error after the charge")
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
            if not self._indexing:
                self._unindexed.add(intent_id)
        if self.on_charge is not None:
            self.on_charge(intent)
        if declined:
            error = _error("card_error", "Your card was declined.", code="card_declined")
            payload = json.loads(error)
            payload["error"]["decline_code"] = "generic_decline"
            payload["error"]["payment_intent"] = intent
            return 402, json.dumps(payload).encode()
        return 200, json.dumps(intent).encode()

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path.rstrip("/") == "/v1/payment_intents/search":
            self._search(handler, parse_qs(url.query))
            return
        prefix = "/v1/payment_intents/"
        intent = self.intents.get(url.path[len(prefix) :]) if url.path.startswith(prefix) else None
        if intent is None:
            self._respond(
                handler, 404, _error("invalid_request_error", f"No such payment_intent: {handler.path}")
            )
            return
        self._respond(handler, 200, json.dumps(intent).encode())

    def _search(self, handler: BaseHTTPRequestHandler, arguments: dict[str, list[str]]) -> None:
        query = (arguments.get("query") or [""])[0]
        clauses = re.split(r"\s+AND\s+", query)
        matches = [SEARCH_CLAUSE.fullmatch(clause) for clause in clauses]
        if not query or not all(matches):
            self._respond(
                handler, 400, _error("invalid_request_error", f"unsupported search query: {query!r}")
            )
            return
        wanted = [
            (match[1], match[2], re.sub(r"\\(.)", r"\1", match[3])) for match in matches if match is not None
        ]
        limit = int((arguments.get("limit") or ["10"])[0])
        with self._lock:
            self.searches += 1
            found = [
                intent
                for intent_id, intent in self.intents.items()
                if intent_id not in self._unindexed
                and all(
                    (intent["status"] if field_name else intent["metadata"].get(key)) == value
                    for key, field_name, value in wanted
                )
            ]
        page = {
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "has_more": len(found) > limit,
            "data": found[:limit],
            "next_page": None,
        }
        self._respond(handler, 200, json.dumps(page).encode())

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
