"""A ledger process SIGKILLed in the middle of a transaction, then a rerun: no order charged twice, none lost.

The process is killed while one of its statements waits on a row lock the test holds: inside the
reserve transaction (the test holds a product row), and inside the transaction that records a charge
as PAID (the test takes the order's row the moment the gateway makes the charge, before it answers).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.core.rate_limit import RateLimiter
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, PAYMENT_UNKNOWN, RESERVED, orders, products
from hub_pipelines.resources.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import CATALOG, Inbox, order_event
from tests.orders.test_ledger_processes import go, start_ledger, wait_ready

RATE = "1000/minute"
BLOCKED_WITHIN_S = 120.0
ORDERS = [("p-cup", 1, "12.50")] * 6 + [("p-espresso", 2, "24.90")] * 6


@contextmanager
def holder(database: PostgresDatabase) -> Iterator[tuple[sa.Connection, int]]:
    """A connection of the test's own, in a transaction, and its backend pid."""
    with database.engine.connect() as connection:
        connection.begin()
        yield connection, connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def wait_until_blocked_by(
    database: PostgresDatabase, holder_pid: int, worker: subprocess.Popen[str], statement_like: str
) -> None:
    """Until a backend's statement like `statement_like` waits on a lock the holder has (a condition,
    not a delay)."""
    blocked = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid)) AND query LIKE :like"
    )
    deadline = time.monotonic() + BLOCKED_WITHIN_S
    with database.engine.connect() as watcher:
        while watcher.execute(blocked, {"holder": holder_pid, "like": statement_like}).scalar_one() == 0:
            watcher.rollback()
            assert worker.poll() is None, f"the ledger ended ({worker.returncode}) before it met the lock"
            assert time.monotonic() < deadline, "the ledger never reached the held row"


def kill(worker: subprocess.Popen[str]) -> None:
    worker.kill()
    assert worker.wait(timeout=60) == -9


def rerun_until_settled(
    make_processor: ProcessorFactory,
    gateway: StripeGateway,
    redis_server: str,
    namespace: str,
    database: PostgresDatabase,
) -> None:
    ledger = make_processor(gateway, rate_limiter=RateLimiter(RATE, redis_server, namespace=namespace))
    # Bounded: an order left open fails the assertions below.
    for _ in range(5):
        ledger.process_batch()
        with database.transaction() as connection:
            open_orders = connection.execute(
                sa.select(sa.func.count()).where(orders.c.status.in_([RESERVED, PAYMENT_UNKNOWN]))
            ).scalar_one()
        if not open_orders:
            return


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
    worker = start_ledger(ledger_database, fake_stripe, redis_server, namespace, 0, rate=RATE)
    wait_ready(worker)
    with holder(ledger_database) as (connection, pid):
        connection.execute(
            sa.select(products.c.stock).where(products.c.product_id == "p-cup").with_for_update()
        )
        go(worker)
        try:
            wait_until_blocked_by(ledger_database, pid, worker, "SELECT reserve_order%")
        finally:
            kill(worker)
        connection.rollback()
    charged_before_rerun = len(fake_stripe.succeeded_intents())

    rerun_until_settled(make_processor, stripe_gateway, redis_server, namespace, ledger_database)

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
    worker = start_ledger(ledger_database, fake_stripe, redis_server, namespace, 0, rate=RATE)
    wait_ready(worker)
    first_charge = threading.Lock()
    charged: list[str] = []

    with holder(ledger_database) as (connection, pid):

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
        go(worker)
        try:
            wait_until_blocked_by(ledger_database, pid, worker, "%UPDATE orders AS o%SET%")
        finally:
            kill(worker)
            fake_stripe.on_charge = None
        connection.rollback()
    (order_id,) = charged

    rerun_until_settled(make_processor, stripe_gateway, redis_server, namespace, ledger_database)

    assert len(fake_stripe.succeeded_intents(order_id)) == 1
    assert_every_order_paid_once_with_its_stock(ledger_database, fake_stripe)
