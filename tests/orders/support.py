"""Building blocks for the order tests: signed events, a seeded catalog, an inbox filled through the landing code."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
