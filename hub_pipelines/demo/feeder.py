"""Feeds an environment with demo work: uploads into the uploads bucket, events onto the topics."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace

from hub_pipelines.core.ports import ObjectStorage, OutgoingMessage, SqlDatabase, Topics
from hub_pipelines.core.telemetry import inject_trace_headers
from hub_pipelines.demo import samples

SIGNATURE_HEADER = "x-hub-signature-256"
DEMO_PRODUCTS = [
    ("p-100", "Espresso beans 1kg", "24.90"),
    ("p-200", "Milk frother", "59.00"),
    ("p-300", "Ceramic cup", "12.50"),
]
# Enough that the demo never sells out: the demo shows orders being paid, not stock running low.
DEMO_STOCK = 1_000_000
EVENT_TYPES = ["page_view"] * 70 + ["add_to_cart"] * 15 + ["purchase"] * 5 + ["error"] * 10


def sign(payload: bytes, secret: str) -> bytes:
    """HMAC-SHA256 of the payload, as 'sha256=<hex>' (the GitHub/Stripe webhook convention)."""
    return b"sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest().encode()


def seed_demo_catalog(database: SqlDatabase) -> int:
    """The products the demo's orders buy, added where missing (prices and stock already there stay)."""
    from hub_pipelines.orders.catalog import add_missing_products

    return add_missing_products(
        database,
        [(p, name, "USD", int(price.replace(".", "")), DEMO_STOCK) for p, name, price in DEMO_PRODUCTS],
    )


def order_event(rng: random.Random, now: datetime) -> dict[str, object]:
    product_id, _name, price = rng.choice(DEMO_PRODUCTS)
    customer = rng.randrange(1, 500)
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "type": "order.placed",
        "occurred_at": now.isoformat(),
        "idempotency_key": str(uuid.UUID(int=rng.getrandbits(128))),
        "customer": {
            "id": f"c-{customer}",
            "email": f"customer{customer}@example.com",
            "phone": f"+1555{customer:07d}",
        },
        "currency": "USD",
        "items": [{"product_id": product_id, "quantity": rng.randint(1, 3), "unit_price": price}],
    }


def analytics_event(rng: random.Random, now: datetime) -> dict[str, object]:
    event_type = rng.choice(EVENT_TYPES)
    properties: dict[str, object] = {"path": rng.choice(["/", "/shop", "/cart", "/checkout"])}
    if event_type in ("add_to_cart", "purchase"):
        properties["product_id"] = rng.choice(DEMO_PRODUCTS)[0]
    if event_type == "purchase":
        properties["amount"] = f"{rng.uniform(5, 120):.2f}"
    if event_type == "error":
        properties["code"] = rng.choice(["E500", "E502", "E_TIMEOUT"])
    user = rng.randrange(1, 2000)
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "type": event_type,
        "user_id": f"u-{user}",
        "session_id": f"s-{user}-{now:%Y%m%d%H}",
        "ts": now.isoformat(),
        "properties": properties,
    }


@dataclass
class DemoFeeder:
    objects: ObjectStorage
    topics: Topics
    uploads_bucket: str
    uploads_prefix: str
    orders_topic: str
    events_topic: str
    signing_secret: str
    announcements_topic: str = "order-events"
    partitions: int = 3
    seed: int | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        for topic in (self.orders_topic, self.events_topic, self.announcements_topic):
            self.topics.create_topic(topic, self.partitions)

    def drop_uploads(self) -> list[str]:
        """A photo-like JPEG, a short MP4 and a small PDF, under fresh names."""
        store = self.objects.bucket(self.uploads_bucket)
        stamp = self.clock().strftime("%Y%m%dT%H%M%S")
        uploads = [
            (f"photo-{stamp}.jpg", samples.photo_jpeg(seed=self._rng.randrange(1000)), "image/jpeg"),
            (f"clip-{stamp}.mp4", samples.clip_mp4(), "video/mp4"),
            (f"brochure-{stamp}.pdf", samples.small_pdf(), "application/pdf"),
        ]
        for name, data, content_type in uploads:
            store.put(self.uploads_prefix + name, data, content_type=content_type)
        return [self.uploads_prefix + name for name, _, _ in uploads]

    def send_orders(self, count: int) -> int:
        now = self.clock()
        messages = []
        for _ in range(count):
            event = order_event(self._rng, now)
            payload = json.dumps(event).encode()
            customer = event["customer"]["id"]  # type: ignore[index]
            # Each order starts its own trace; the ledger and the outbox relay continue it.
            with trace.get_tracer(__name__).start_as_current_span(
                f"send {self.orders_topic}",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.destination.name": self.orders_topic,
                    "order.event_id": str(event["event_id"]),
                },
            ):
                headers = inject_trace_headers({SIGNATURE_HEADER: sign(payload, self.signing_secret)})
            messages.append(OutgoingMessage(value=payload, key=str(customer).encode(), headers=headers))
        return len(self.topics.produce(self.orders_topic, messages))

    def send_events(self, count: int) -> int:
        now = self.clock()
        messages = []
        for _ in range(count):
            event = analytics_event(self._rng, now)
            messages.append(
                OutgoingMessage(value=json.dumps(event).encode(), key=str(event["user_id"]).encode())
            )
        return len(self.topics.produce(self.events_topic, messages))
