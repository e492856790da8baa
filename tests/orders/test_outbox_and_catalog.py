"""The outbox relay against the Kafka-protocol broker, and the catalog's cache levels against Redis."""

from __future__ import annotations

import itertools
import json
import re
import uuid

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_pipelines.core.ports import ChargeRequest, ChargeResult, GatewayUnavailable, PaymentOutcomeUnknown
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.outbox import EVENT_ID_HEADER, TRACEPARENT_HEADER, relay_outbox
from hub_pipelines.orders.tables import FINAL_STATUSES, RESERVED, orders, outbox, products
from hub_pipelines.resources.cache import RedisCache
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, order_event
from tests.services.kafka import MOCK_CLUSTER_PARTITIONS, KafkaBroker

TRACEPARENT = re.compile(rb"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def test_outbox_relay_publishes_each_event_with_its_id_and_traceparent_and_marks_it_sent(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, kafka_broker: KafkaBroker
) -> None:
    topic = f"order-events-{uuid.uuid4().hex[:8]}"
    kafka_broker.ensure_topic(topic, MOCK_CLUSTER_PARTITIONS)
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers, timeout_seconds=15)
    Inbox(ledger_database).land_events([order_event(customer="c-1"), order_event(customer="c-2")])
    make_processor(ApprovingLocalGateway()).process_batch()
    try:
        report = relay_outbox(ledger_database, topics, topic)
        again = relay_outbox(ledger_database, topics, topic)
        ends = topics.end_offsets(topic)
        published = [m for p, end in ends.items() for m in topics.read_range(topic, p, 0, end)]
    finally:
        topics.close()

    assert report.published == 4 and report.still_unsent == 0
    assert again.published == 0
    with ledger_database.transaction() as connection:
        queued = dict(connection.execute(sa.select(outbox.c.event_id, outbox.c.event_type)).all())
    assert {m.headers[EVENT_ID_HEADER].decode(): json.loads(m.value)["type"] for m in published} == queued
    assert all(TRACEPARENT.match(m.headers[TRACEPARENT_HEADER]) for m in published)


def test_catalog_is_served_from_cache_levels_and_a_price_change_reaches_every_process(
    ledger_database: PostgresDatabase, redis_server: str, redis_key_prefix: str
) -> None:
    shared = RedisCache(url=redis_server, key_prefix=redis_key_prefix)
    writer = Catalog(ledger_database, shared)
    writer.upsert("p-lamp", "Desk lamp", "USD", 3900, 10)
    reader = Catalog(ledger_database, shared)
    other_process = Catalog(ledger_database, shared)
    reader.refresh()
    other_process.refresh()

    assert reader.product("p-lamp").unit_price_minor == 3900
    assert reader.product("p-lamp").unit_price_minor == 3900
    assert other_process.product("p-lamp").unit_price_minor == 3900
    assert (reader.stats.database_reads, reader.stats.local_hits) == (1, 1)
    assert (other_process.stats.shared_hits, other_process.stats.database_reads) == (1, 0)

    writer.set_price("p-lamp", 4500)
    other_process.refresh()

    assert other_process.product("p-lamp").unit_price_minor == 4500
    assert other_process.stats.database_reads == 1


def test_expired_catalog_entries_are_all_renewed_by_one_database_read(
    ledger_database: PostgresDatabase,
) -> None:
    now = [0.0]
    catalog = Catalog(ledger_database, local_ttl=5.0, clock=lambda: now[0])
    for n in range(3):
        catalog.upsert(f"p-{n}", f"Product {n}", "USD", 100 + n, 10)
    catalog.products(["p-0", "p-1", "p-2"])
    with ledger_database.transaction() as connection:
        connection.execute(
            sa.update(products).where(products.c.product_id == "p-2").values(unit_price_minor=999)
        )
    catalog.reset_stats()
    now[0] = 6.0

    first = catalog.products(["p-0"])
    rest = catalog.products(["p-1", "p-2"])

    assert catalog.stats.database_reads == 1 and catalog.stats.local_hits == 2
    assert first["p-0"].unit_price_minor == 100
    assert rest["p-2"].unit_price_minor == 999


EXAMPLE_PARTITIONS = itertools.count(1)


class FlakyGateway:
    """Answers from a script: paid, declined, unknown or unavailable, per call; charges once per key."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls = 0
        self.charged: dict[str, int] = {}

    def charge(self, request: ChargeRequest) -> ChargeResult:
        answer = self.script[self.calls % len(self.script)]
        self.calls += 1
        if answer == "unavailable":
            raise GatewayUnavailable("circuit open")
        if answer == "declined" and request.order_id not in self.charged:
            return ChargeResult("declined", None, reason="card declined")
        self.charged[request.order_id] = 1
        if answer == "unknown":
            raise PaymentOutcomeUnknown("timed out after sending")
        return ChargeResult("paid", f"pi_{request.order_id}")

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        # The script decides every answer, a look-up included (it then falls through to `charge`).
        return None

    def breaker_state(self) -> str:
        return "closed"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=10),
    quantities=st.lists(st.integers(min_value=1, max_value=4), min_size=10, max_size=10),
    script=st.lists(st.sampled_from(["paid", "declined", "unknown", "unavailable"]), min_size=1, max_size=5),
)
def test_any_mix_of_duplicates_and_gateway_failures_keeps_the_ledger_invariants(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    keys: list[int],
    quantities: list[int],
    script: list[str],
) -> None:
    run = uuid.uuid4().hex[:6]
    stock = 12
    Catalog(ledger_database).upsert(f"p-{run}", f"Item {run}", "USD", 100, stock)
    # Every example shares the database: its own inbox partition, never one an earlier example used
    # (a random one could repeat, and landing offsets 0.. there again collides with the landed range).
    landed = Inbox(ledger_database, partition=next(EXAMPLE_PARTITIONS)).land_events(
        order_event(idempotency_key=f"{run}-{key}", items=[(f"p-{run}", quantities[key], "1.00")])
        for key in keys
    )
    assert landed == len(keys)
    gateway = FlakyGateway(script)
    ledger = make_processor(gateway)
    for _ in range(3):
        ledger.process_batch()
    gateway.script = ["paid"]
    ledger.process_batch()

    invariants = check_invariants(ledger_database)
    assert invariants.holds(outbox_bound_s=3600), invariants
    with ledger_database.transaction() as connection:
        placed = connection.execute(
            sa.select(orders.c.status, orders.c.item_count).where(orders.c.idempotency_key.like(f"{run}-%"))
        ).all()
        left = connection.execute(
            sa.text("SELECT stock FROM products WHERE product_id = :p"), {"p": f"p-{run}"}
        )
        remaining = int(left.scalar_one())
    assert len(placed) <= len(set(keys))
    assert all(status in FINAL_STATUSES for status, _ in placed)
    assert remaining == stock - sum(items for status, items in placed if status not in ("FAILED", RESERVED))
    assert remaining >= 0
