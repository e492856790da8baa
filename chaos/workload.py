"""The workload: signed orders, analytics events and uploads at configurable rates, each one recorded.

Every message is produced with its partition chosen here and its offset read back from the broker,
so the checker can follow each one to where it must end. The mix reuses the suite's generators:
the demo feeder's orders and events, the poison of the sensors' poison test, the media corpus.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from chaos.services import KAFKA_PARTITIONS
from hub_pipelines import settings
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo import samples
from hub_pipelines.demo.feeder import SIGNATURE_HEADER, analytics_event, order_event, sign
from hub_pipelines.resources.kafka_topics import KafkaTopics
from tests.media import corpus
from tests.orders.pii_canaries import Canary

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

VALID, POISON, DUPLICATE, KEY_REUSED, FLASH_SALE = "valid", "poison", "duplicate", "key_reused", "flash_sale"
MALFORMED, LATE = "malformed", "late"
IMAGE, PDF, INFECTED, HOSTILE = "image", "pdf", "infected", "hostile"


@dataclass(frozen=True)
class Rates:
    orders_per_s: float = 3.0
    events_per_s: float = 40.0
    uploads_per_min: float = 4.0
    flash_sale_stock: int = 25
    flash_sale_orders: int = 60


@dataclass(frozen=True)
class ProducedMessage:
    kind: str
    event_id: str | None
    partition: int
    offset: int
    produced_at: float


@dataclass(frozen=True)
class Upload:
    kind: str
    key: str
    size: int
    uploaded_at: float


@dataclass
class Produced:
    """Everything the workload sent, in order."""

    orders: list[ProducedMessage] = field(default_factory=list)
    events: list[ProducedMessage] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    canaries: list[Canary] = field(default_factory=list)
    signing_failures: int = 0


class Workload:
    def __init__(
        self,
        seed: int,
        rates: Rates,
        bootstrap_servers: str,
        s3: Any,
        signing_secret: str,
        flash_sale_product: str,
    ) -> None:
        self.rng = random.Random(seed)
        self.rates = rates
        self.topics = KafkaTopics(bootstrap_servers=bootstrap_servers, timeout_seconds=30)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name=s3.region,
        )
        self.secret = signing_secret
        self.flash_sale_product = flash_sale_product
        self.produced = Produced(canaries=[Canary.new() for _ in range(3)])
        self._sent_orders: list[tuple[OutgoingMessage, dict[str, Any]]] = []
        self._sent_events: list[bytes] = []
        self._upload_count = 0
        self._lock = threading.Lock()

    def _signed(self, event: dict[str, Any]) -> OutgoingMessage:
        payload = json.dumps(event).encode()
        return OutgoingMessage(
            value=payload,
            headers={SIGNATURE_HEADER: sign(payload, self.secret)},
            partition=self.rng.randrange(KAFKA_PARTITIONS),
        )

    def _valid_order(self, now: datetime) -> dict[str, Any]:
        event = order_event(self.rng, now)
        if self.rng.random() < 0.2:
            canary = self.rng.choice(self.produced.canaries)
            event["customer"] = {"id": event["customer"]["id"], "email": canary.email, "phone": canary.phone}  # type: ignore[index]
        return event

    def _poison_order(self, now: datetime) -> OutgoingMessage:
        partition = self.rng.randrange(KAFKA_PARTITIONS)
        choice = self.rng.randrange(6)
        event = order_event(self.rng, now)
        if choice == 0:
            payload = json.dumps(event).encode()
            return OutgoingMessage(
                value=payload, headers={SIGNATURE_HEADER: "sha256=é".encode()}, partition=partition
            )
        if choice == 1:
            payload = b"\xff\xfe{not json" + bytes([self.rng.randrange(256)])
            return OutgoingMessage(
                value=payload, headers={SIGNATURE_HEADER: sign(payload, self.secret)}, partition=partition
            )
        if choice == 2:
            event["event_id"] = f"order\x00{uuid.UUID(int=self.rng.getrandbits(128))}"
        elif choice == 3:
            event["items"] = [{"product_id": "p-100", "quantity": 1, "unit_price": "1E+999999999"}]
        elif choice == 4:
            event["items"] = [{"product_id": "p-unknown", "quantity": 1, "unit_price": "1.00"}]
        else:
            payload = json.dumps(event).encode()
            return OutgoingMessage(
                value=payload, headers={SIGNATURE_HEADER: sign(b"other", self.secret)}, partition=partition
            )
        payload = json.dumps(event).encode()
        return OutgoingMessage(
            value=payload, headers={SIGNATURE_HEADER: sign(payload, self.secret)}, partition=partition
        )

    def _order_messages(self, count: int, now: datetime) -> list[tuple[str, OutgoingMessage, str | None]]:
        messages: list[tuple[str, OutgoingMessage, str | None]] = []
        for _ in range(count):
            roll = self.rng.random()
            if roll < 0.08:
                message = self._poison_order(now)
                messages.append((POISON, message, None))
            elif roll < 0.14 and self._sent_orders:
                earlier, event = self.rng.choice(self._sent_orders)
                copy = OutgoingMessage(
                    value=earlier.value,
                    headers=earlier.headers,
                    partition=self.rng.randrange(KAFKA_PARTITIONS),
                )
                messages.append((DUPLICATE, copy, str(event["event_id"])))
            elif roll < 0.18 and self._sent_orders:
                _, earlier_event = self.rng.choice(self._sent_orders)
                event = {**earlier_event, "event_id": str(uuid.UUID(int=self.rng.getrandbits(128)))}
                event["items"] = [{**event["items"][0], "quantity": int(event["items"][0]["quantity"]) + 1}]
                messages.append((KEY_REUSED, self._signed(event), str(event["event_id"])))
            else:
                event = self._valid_order(now)
                message = self._signed(event)
                self._sent_orders.append((message, event))
                messages.append((VALID, message, str(event["event_id"])))
        return messages

    def flash_sale_messages(self, now: datetime) -> list[tuple[str, OutgoingMessage, str | None]]:
        messages: list[tuple[str, OutgoingMessage, str | None]] = []
        for _ in range(self.rates.flash_sale_orders):
            event = order_event(self.rng, now)
            event["items"] = [{"product_id": self.flash_sale_product, "quantity": 1, "unit_price": "9.99"}]
            messages.append((FLASH_SALE, self._signed(event), str(event["event_id"])))
        return messages

    def _event_messages(self, count: int, now: datetime) -> list[tuple[str, OutgoingMessage, str | None]]:
        messages: list[tuple[str, OutgoingMessage, str | None]] = []
        for _ in range(count):
            partition = self.rng.randrange(KAFKA_PARTITIONS)
            roll = self.rng.random()
            if roll < 0.03:
                bad = self.rng.choice(
                    [
                        b"\x00\xff not json",
                        json.dumps(
                            {"event_id": 7, "type": ["page_view"], "user_id": None, "ts": {"at": 1}}
                        ).encode(),
                        json.dumps(
                            {
                                **analytics_event(self.rng, now),
                                "event_id": f"event\x00{partition}",
                                "user_id": "u\x00",
                            }
                        ).encode(),
                        json.dumps({**analytics_event(self.rng, now), "ts": "yesterday-ish"}).encode(),
                    ]
                )
                messages.append((MALFORMED, OutgoingMessage(value=bad, partition=partition), None))
            elif roll < 0.07 and self._sent_events:
                value = self.rng.choice(self._sent_events)
                event_id = str(json.loads(value)["event_id"])
                messages.append((DUPLICATE, OutgoingMessage(value=value, partition=partition), event_id))
            else:
                late = roll < 0.10
                when = now - timedelta(days=1, hours=self.rng.randrange(1, 6)) if late else now
                event = analytics_event(self.rng, when)
                value = json.dumps(event).encode()
                self._sent_events.append(value)
                messages.append(
                    (
                        LATE if late else VALID,
                        OutgoingMessage(value=value, partition=partition),
                        str(event["event_id"]),
                    )
                )
        return messages

    def _produce(
        self, topic: str, messages: list[tuple[str, OutgoingMessage, str | None]], into: list[ProducedMessage]
    ) -> None:
        if not messages:
            return
        positions = self.topics.produce(topic, [message for _, message, _ in messages])
        at = time.time()
        with self._lock:
            for (kind, _, event_id), (partition, offset) in zip(messages, positions, strict=True):
                into.append(ProducedMessage(kind, event_id, partition, offset, at))

    def produce_orders(self, messages: list[tuple[str, OutgoingMessage, str | None]]) -> None:
        self._produce(settings.ORDERS_TOPIC, messages, self.produced.orders)

    def upload(self) -> None:
        self._upload_count += 1
        n = self._upload_count
        roll = self.rng.random()
        if roll < 0.45:
            kind, name, data = IMAGE, f"photo-{n}.jpg", samples.photo_jpeg(320, 240, seed=n)
        elif roll < 0.65:
            kind, name, data = PDF, f"brochure-{n}.pdf", samples.small_pdf(pages=1)
        elif roll < 0.80:
            kind, name, data = INFECTED, f"invoice-{n}.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + EICAR
        else:
            hostile = self.rng.choice(
                [
                    corpus.png_header_only(60000, 60000),
                    corpus.corrupted(samples.photo_jpeg(160, 120, seed=n), seed=n),
                    samples.photo_jpeg(160, 120, seed=n)[:700],
                    b"%PDF-1.7\n" + bytes(self.rng.getrandbits(8) for _ in range(400)),
                ]
            )
            kind, name, data = HOSTILE, f"hostile-{n}.png", hostile
        key = f"{settings.UPLOADS_PREFIX}chaos/{uuid.UUID(int=self.rng.getrandbits(128)).hex[:8]}-{name}"
        self.s3.put_object(Bucket=settings.UPLOADS_BUCKET, Key=key, Body=data)
        with self._lock:
            self.produced.uploads.append(Upload(kind, key, len(data), time.time()))

    def run(
        self, stop: threading.Event, seconds: float, on_error: Callable[[str, BaseException], None]
    ) -> None:
        """Produce at the configured rates until `stop` is set or `seconds` have passed."""
        started = time.monotonic()
        flash_at = seconds * self.rng.uniform(0.2, 0.5)
        flashed = False
        next_upload = 0.0
        owed = {"orders": 0.0, "events": 0.0}
        tick = 0.5
        while not stop.is_set() and time.monotonic() - started < seconds:
            elapsed = time.monotonic() - started
            now = datetime.now(UTC)
            owed["orders"] += self.rates.orders_per_s * tick
            owed["events"] += self.rates.events_per_s * tick
            orders, events = int(owed["orders"]), int(owed["events"])
            owed["orders"] -= orders
            owed["events"] -= events
            try:
                batch = self._order_messages(orders, now)
                if not flashed and elapsed >= flash_at:
                    batch += self.flash_sale_messages(now)
                    flashed = True
                self.produce_orders(batch)
                self._produce(settings.EVENTS_TOPIC, self._event_messages(events, now), self.produced.events)
                if self.rates.uploads_per_min and elapsed >= next_upload:
                    self.upload()
                    next_upload = elapsed + self.rng.expovariate(self.rates.uploads_per_min / 60)
            except Exception as failure:  # the broker or S3 refused: the nemesis may be at work
                on_error("workload", failure)
            stop.wait(tick)

    def close(self) -> None:
        self.topics.close()
