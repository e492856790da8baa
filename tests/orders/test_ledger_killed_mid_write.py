"""A ledger process SIGKILLed in the middle of a transaction, then a rerun: no order charged twice, none lost.

The process is killed while one of its statements waits on a row lock the test holds: inside the
reserve transaction (the test holds a product row), and inside the transaction that records a charge
as PAID (the test takes the order's row the moment the gateway makes the charge, before it answers).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.core.rate_limit import RateLimiter
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, orders, products
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import (
    CATALOG,
    Inbox,
    ledger_worker,
    order_event,
    rerun_until_settled,
    row_holder,
    wait_until_blocked_by,
)

RATE = "1000/minute"
ORDERS = [("p-cup", 1, "12.50")] * 6 + [("p-espresso", 2, "24.90")] * 6


def rerun(
    make_processor: ProcessorFactory,
    gateway: StripeGateway,
    redis_server: str,
    namespace: str,
    database: PostgresDatabase,
) -> None:
    limiter = RateLimiter(RATE, redis_server, namespace=namespace)
    rerun_until_settled(make_processor(gateway, rate_limiter=limiter), database)


def assert_every_order_paid_once_with_its_stock(database: PostgresDatabase, fake_stripe: FakeStripe) -> None:
    with database.transaction() as connection:
        booked = dict(connection.execute(sa.select(orders.c.order_id, orders.c.status)).all())
        letters = connection.execute(sa.select(dead_letters.c.reason)).scalars().all()
        stock = dict(connection.execute(sa.select(products.c.product_id, products.c.stock)).all())
    assert letters == []
    assert len(booked) == len(ORDERS) and set(booked.values()) == {PAID}
    for order_id in booked:
        assert len(fake_stripe.succeeded_intents(order_id)) == 1, order_id
    assert len(fake_stripe.succeeded_intents()) == len(ORDERS)
    sold = Counter[str]()
    for product, quantity, _ in ORDERS:
        sold[product] += quantity
    initial = {product: units for product, _, _, _, units in CATALOG}
    assert {product: stock[product] for product in sold} == {p: initial[p] - n for p, n in sold.items()}
    assert check_invariants(database).holds(outbox_bound_s=3600)


def land_orders(database: PostgresDatabase) -> None:
    Inbox(database).land_events(order_event(customer=f"c-{n}", items=[item]) for n, item in enumerate(ORDERS))


def test_ledger_killed_inside_its_reserve_transaction_reruns_to_every_order_paid_once(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    land_orders(ledger_database)
    namespace = f"{redis_key_prefix}orders"
    worker = ledger_worker(ledger_database, fake_stripe.base_url, redis_server, namespace, RATE)
    with row_holder(ledger_database) as (connection, pid):
        connection.execute(
            sa.select(products.c.stock).where(products.c.product_id == "p-cup").with_for_update()
        )
        worker.go()
        try:
            wait_until_blocked_by(ledger_database, pid, worker.running, "SELECT reserve_order%")
        finally:
            worker.kill()
        connection.rollback()
    charged_before_rerun = len(fake_stripe.succeeded_intents())

    rerun(make_processor, stripe_gateway, redis_server, namespace, ledger_database)

    assert charged_before_rerun < len(ORDERS)
    assert_every_order_paid_once_with_its_stock(ledger_database, fake_stripe)


def test_ledger_killed_inside_the_transaction_recording_a_charge_reruns_without_charging_it_again(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    land_orders(ledger_database)
    namespace = f"{redis_key_prefix}orders"
    worker = ledger_worker(ledger_database, fake_stripe.base_url, redis_server, namespace, RATE)
    first_charge = threading.Lock()
    charged: list[str] = []

    with row_holder(ledger_database) as (connection, pid):

        def take_the_order_row(intent: dict[str, Any]) -> None:
            # Once, on the first charge: its order's row is locked before the ledger hears of the charge.
            with first_charge:
                if charged:
                    return
                order_id = intent["metadata"]["order_id"]
                connection.execute(
                    sa.select(orders.c.status).where(orders.c.order_id == order_id).with_for_update()
                )
                charged.append(order_id)

        fake_stripe.on_charge = take_the_order_row
        worker.go()
        try:
            wait_until_blocked_by(ledger_database, pid, worker.running, "%UPDATE orders AS o%SET%")
        finally:
            worker.kill()
            fake_stripe.on_charge = None
        connection.rollback()
    (order_id,) = charged

    rerun(make_processor, stripe_gateway, redis_server, namespace, ledger_database)

    assert len(fake_stripe.succeeded_intents(order_id)) == 1
    assert_every_order_paid_once_with_its_stock(ledger_database, fake_stripe)
