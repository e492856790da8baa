"""Building blocks for the order tests: signed events, a seeded catalog, an inbox filled through the
landing code, run processes of the batch processor (`worker_process.py`) started, held on a row lock,
killed, and the reruns that settle what they left."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import topic_inbox
from hub_pipelines.core.ports import SqlDatabase, TopicMessage
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.orders.authenticity import (
    AUTHORIZATION_HEADER,
    PAYLOAD_HASH_CLAIM,
    SIGNATURE_HEADER,
    EventAuthenticator,
    hmac_signature,
    payload_sha256,
)
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.tables import PAYMENT_UNKNOWN, RESERVED, orders

if TYPE_CHECKING:
    from hub_pipelines.orders.processing import OrderBatchProcessor

HMAC_SECRET = "test-signing-secret"
JWT_SECRET = "test-jwt-secret-of-at-least-32-bytes!!"
TOPIC = "orders"
CATALOG = [
    ("p-espresso", "Espresso beans 1kg", "USD", 2490, 1000),
    ("p-frother", "Milk frother", "USD", 5900, 1000),
    ("p-cup", "Ceramic cup", "USD", 1250, 1000),
]


def authenticator(**overrides: Any) -> EventAuthenticator:
    settings: dict[str, Any] = {"hmac_secret": HMAC_SECRET, "jwt_hs256_secret": JWT_SECRET}
    settings.update(overrides)
    return EventAuthenticator(**settings)


def order_event(
    *,
    idempotency_key: str | None = None,
    customer: str = "c-1",
    items: Sequence[tuple[str, int, Any]] = (("p-cup", 1, "12.50"),),
    currency: str = "USD",
    payment_method: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "order.placed",
        "occurred_at": "2026-11-25T12:00:00+00:00",
        "idempotency_key": idempotency_key or str(uuid.uuid4()),
        "customer": {"id": customer, "email": f"{customer}@example.com", "phone": "+15550000001"},
        "currency": currency,
        "items": [{"product_id": p, "quantity": q, "unit_price": price} for p, q, price in items],
    }
    if payment_method:
        event["payment_method"] = payment_method
    event.update(extra)
    return event


def hmac_headers(payload: bytes, secret: str = HMAC_SECRET) -> dict[str, bytes]:
    return {SIGNATURE_HEADER: hmac_signature(payload, secret).encode()}


def jwt_headers(
    payload: bytes,
    *,
    key: str = JWT_SECRET,
    algorithm: str = "HS256",
    audience: str = "hub-orders",
    issuer: str = "hub-checkout",
    expires_in: float = 300,
) -> dict[str, bytes]:
    claims = {
        "iss": issuer,
        "aud": audience,
        "exp": int(time.time() + expires_in),
        PAYLOAD_HASH_CLAIM: payload_sha256(payload),
    }
    token = jwt.encode(claims, key, algorithm=algorithm)
    return {AUTHORIZATION_HEADER: f"Bearer {token}".encode()}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


@dataclass
class Inbox:
    """Lands messages into the SQL inbox through the real landing sink, at increasing offsets."""

    database: SqlDatabase
    topic: str = TOPIC
    partition: int = 0
    _offsets: itertools.count = field(default_factory=itertools.count)

    def land(self, messages: Iterable[tuple[bytes, dict[str, bytes]]]) -> int:
        batch = [
            TopicMessage(self.topic, self.partition, next(self._offsets), value, None, headers)
            for value, headers in messages
        ]
        if not batch:
            return 0
        chunk = OffsetRange(self.partition, batch[0].offset, batch[-1].offset + 1)
        counts = SqlInboxSink(self.database).land_chunk(self.topic, chunk, batch, run_id="test")
        return counts.landed

    def store(self, messages: Iterable[tuple[str, bytes, dict[str, str]]]) -> list[int]:
        """Put (event id, payload, headers) rows into `topic_inbox` as the landing stores them, without
        the landing's decoding: the ledger's own handling of any payload is what is under test."""
        rows = [
            {
                "topic": self.topic,
                "partition": self.partition,
                "offset": next(self._offsets),
                "event_id": event_id,
                "payload": payload,
                "headers": headers,
            }
            for event_id, payload, headers in messages
        ]
        with self.database.transaction() as connection:
            connection.execute(sa.insert(topic_inbox), rows)
        return [int(str(row["offset"])) for row in rows]

    def land_events(self, events: Iterable[dict[str, Any]]) -> int:
        payloads = [encode(event) for event in events]
        return self.land((payload, hmac_headers(payload)) for payload in payloads)


def seed_catalog(catalog: Catalog, products: Sequence[tuple[str, str, str, int, int]] = CATALOG) -> None:
    for product in products:
        catalog.upsert(*product)


WORKER = [sys.executable, "-m", "tests.orders.worker_process"]
BLOCKED_WITHIN_S = 120.0


class WorkerProcess:
    """A run process of `worker_process.py` (one of its commands), driven over stdin/stdout: it
    prints "ready", waits for `go`, runs, and prints its batch's counts."""

    def __init__(self, command: str, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [*WORKER, command, *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.close()

    def counts(self, timeout_s: float = 300) -> Counter[str]:
        """The counts it printed, once it exited cleanly."""
        assert self.process.stdout is not None
        counts = Counter[str](json.loads(self.process.stdout.readline()))
        assert self.process.wait(timeout=timeout_s) == 0
        return counts

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.wait_killed()

    def wait_killed(self, timeout_s: float = 120) -> None:
        assert self.process.wait(timeout=timeout_s) == -9


def ledger_worker(
    database: SqlDatabase,
    stripe_base_url: str,
    redis_server: str,
    namespace: str,
    rate: str,
    kill_after: int = 0,
) -> WorkerProcess:
    """A batch processor's run process (`worker_process.py ledger`), ready for `go`; with `kill_after`,
    it SIGKILLs itself right after that many successful charges."""
    url = database.engine.url.render_as_string(hide_password=False)
    worker = WorkerProcess("ledger", url, stripe_base_url, redis_server, namespace, rate, str(kill_after))
    worker.wait_ready()
    return worker


def run_to_the_end(workers: Sequence[WorkerProcess], timeout_s: float = 300) -> Counter[str]:
    """Start every worker at once, then sum the counts they print."""
    for worker in workers:
        worker.go()
    counts: Counter[str] = Counter()
    for worker in workers:
        counts.update(worker.counts(timeout_s))
    return counts


@contextmanager
def row_holder(database: SqlDatabase) -> Iterator[tuple[sa.Connection, int]]:
    """A connection of the test's own, in a transaction (to take row locks in), and its backend pid."""
    with database.engine.connect() as connection:
        connection.begin()
        yield connection, connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def wait_until_blocked_by(
    database: SqlDatabase,
    holder_pid: int,
    running: Callable[[], bool],
    statement_like: str,
    backends: int = 1,
) -> None:
    """Until `backends` statements like `statement_like` wait on a lock, one of them on the holder's (a
    condition, not a delay: PostgreSQL queues a second waiter for a row behind the first, not behind
    the holder); `running` says whether the processes or threads that send them still run."""
    blocked = sa.text(
        "SELECT count(*) FILTER (WHERE :holder = ANY(pg_blocking_pids(pid))), "
        "count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0) "
        "FROM pg_stat_activity WHERE query LIKE :like"
    )
    deadline = time.monotonic() + BLOCKED_WITHIN_S
    with database.engine.connect() as watcher:
        while True:
            on_holder, waiting = watcher.execute(
                blocked, {"holder": holder_pid, "like": statement_like}
            ).one()
            if on_holder and waiting >= backends:
                return
            watcher.rollback()
            assert running(), "the batch ended before it met the lock"
            assert time.monotonic() < deadline, "the batch never reached the held row"


def awaiting_payment_outcome(database: SqlDatabase) -> int:
    """Orders still RESERVED or PAYMENT_UNKNOWN."""
    with database.transaction() as connection:
        return connection.execute(
            sa.select(sa.func.count()).where(orders.c.status.in_([RESERVED, PAYMENT_UNKNOWN]))
        ).scalar_one()


def rerun_until_settled(
    processor: OrderBatchProcessor,
    database: SqlDatabase,
    *,
    batches: int = 5,
    between: Callable[[], object] = lambda: None,
) -> None:
    """Batches until no order awaits its payment outcome, as the next runs would; `between` runs after
    each batch that left one. Bounded: an order left open fails the caller's assertions."""
    for _ in range(batches):
        processor.process_batch()
        if not awaiting_payment_outcome(database):
            return
        between()
