"""Lanes as processes: two and four lane processes land their partitions of one Kafka topic and run
the ledger over them at the same time, on products every lane sells (an oversell race), with
customers and redelivered events spread over partitions of different lanes. Every event is taken
once, the stock is sold exactly, never below zero, and every PAID order has exactly one charge."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import FINAL_STATUSES, PAID, order_intake, orders, products
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.support import (
    WorkerProcess,
    encode,
    hmac_headers,
    order_event,
    run_to_the_end,
    seed_catalog,
)
from tests.services.kafka import KafkaBroker

PARTITIONS = 4
SCARCE_STOCK = 40
SCARCE_ORDERS = 120
RETRIED_ORDERS = 12
REDELIVERED_EVENTS = 12
CUSTOMERS = 6
RATE = f"{(SCARCE_ORDERS + RETRIED_ORDERS) // CUSTOMERS}/minute"
"""Exactly each customer's orders: one budget spent twice (by two lanes) would reject an order."""


def produce_orders(kafka_broker: KafkaBroker) -> str:
    """Orders for the scarce print on every partition; orders whose client retried them (same
    idempotency key, new event id) and orders the producer delivered twice (same event id), each
    second copy on a partition of another lane; a customer's orders are on every partition."""
    topic = kafka_broker.new_topic("lane-orders", PARTITIONS)
    scarce = [
        order_event(customer=f"c-{n % CUSTOMERS}", items=[("p-limited", 1, "50.00"), ("p-cup", 1, "12.50")])
        for n in range(SCARCE_ORDERS)
    ]
    retried = [
        order_event(customer=f"c-{n % CUSTOMERS}", items=[("p-cup", 2, "12.50")])
        for n in range(RETRIED_ORDERS)
    ]
    placed = [(event, n % PARTITIONS) for n, event in enumerate(scarce + retried)]
    placed += [
        ({**event, "event_id": str(uuid.uuid4())}, (n + 1) % PARTITIONS) for n, event in enumerate(retried)
    ]
    placed += [(event, (n + 1) % PARTITIONS) for n, event in enumerate(scarce[:REDELIVERED_EVENTS])]
    messages = [
        OutgoingMessage(value=encode(event), partition=partition, headers=hmac_headers(encode(event)))
        for event, partition in placed
    ]
    KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers).produce(topic, messages)
    return topic


def run_lanes(
    lanes: int,
    topic: str,
    database: PostgresDatabase,
    stripe: FakeStripe,
    redis_server: str,
    namespace: str,
    bootstrap: str,
) -> Counter[str]:
    url = database.sqlalchemy_url.render_as_string(hide_password=False)
    command = [url, stripe.base_url, redis_server, namespace, RATE, bootstrap, topic]
    workers = [WorkerProcess("lane", *command, str(lane), str(lanes)) for lane in range(lanes)]
    for worker in workers:
        worker.wait_ready()
    return run_to_the_end(workers)


@pytest.mark.parametrize("lanes", [2, 4])
def test_lane_processes_side_by_side_take_every_event_once_and_sell_exactly_the_stock(
    lanes: int,
    ledger_database: PostgresDatabase,
    fake_stripe: FakeStripe,
    kafka_broker: KafkaBroker,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    seed_catalog(Catalog(ledger_database))
    Catalog(ledger_database).upsert("p-limited", "Limited print", "USD", 5000, SCARCE_STOCK)
    topic = produce_orders(kafka_broker)

    counts = run_lanes(
        lanes,
        topic,
        ledger_database,
        fake_stripe,
        redis_server,
        f"{redis_key_prefix}orders",
        kafka_broker.bootstrap_servers,
    )

    events = SCARCE_ORDERS + 2 * RETRIED_ORDERS
    paid = SCARCE_STOCK + RETRIED_ORDERS
    with ledger_database.transaction() as connection:
        booked = dict(connection.execute(sa.select(orders.c.order_id, orders.c.status)).all())
        intake = connection.execute(
            sa.select(order_intake.c.partition, order_intake.c.offset).where(order_intake.c.topic == topic)
        ).all()
        scarce_left = connection.execute(
            sa.select(products.c.stock).where(products.c.product_id == "p-limited")
        ).scalar_one()
    assert len(intake) == len(set(intake)) == events
    assert counts == {"paid": paid, "rejected": SCARCE_ORDERS - SCARCE_STOCK, "duplicate": RETRIED_ORDERS}
    assert scarce_left == 0
    assert set(booked.values()) <= FINAL_STATUSES
    assert list(booked.values()).count(PAID) == paid
    for order_id, status in booked.items():
        assert len(fake_stripe.succeeded_intents(order_id)) == (1 if status == PAID else 0), order_id
    assert len(fake_stripe.succeeded_intents()) == paid
    invariants = check_invariants(ledger_database)
    assert invariants.duplicates_sent == RETRIED_ORDERS
    assert invariants.holds(outbox_bound_s=3600), invariants
