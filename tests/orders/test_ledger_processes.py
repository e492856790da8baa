"""Ledger processes with the per-customer rate limit in Redis: a rerun after SIGKILL mid-batch, and two
overlapping processes, pay every well-formed order exactly once and never spend the budget twice;
three processes, each with its own engine, on products they all sell, sell exactly the stock."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.core.rate_limit import RateLimiter
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, order_items, orders, products
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import (
    Inbox,
    ledger_worker,
    order_event,
    rerun_until_settled,
    run_to_the_end,
    seed_catalog,
)

CUSTOMERS = 4
ORDERS_PER_CUSTOMER = 10
RATE = f"{ORDERS_PER_CUSTOMER}/minute"
"""Exactly each customer's orders: one hit spent twice would dead-letter an order."""


def land_orders(database: PostgresDatabase) -> None:
    seed_catalog(Catalog(database))
    Inbox(database).land_events(
        order_event(customer=f"c-{customer}", items=[("p-cup", 1, "12.50")])
        for _ in range(ORDERS_PER_CUSTOMER)
        for customer in range(CUSTOMERS)
    )


def assert_every_order_paid_once(database: PostgresDatabase, fake_stripe: FakeStripe) -> None:
    with database.transaction() as connection:
        booked = connection.execute(sa.select(orders.c.order_id, orders.c.status)).all()
        letters = connection.execute(sa.select(dead_letters.c.reason)).scalars().all()
    assert letters == []
    assert len(booked) == CUSTOMERS * ORDERS_PER_CUSTOMER
    assert Counter(status for _, status in booked) == {PAID: len(booked)}
    for order_id, _ in booked:
        assert len(fake_stripe.succeeded_intents(order_id)) == 1, order_id
    assert len(fake_stripe.succeeded_intents()) == len(booked)
    assert check_invariants(database).holds(outbox_bound_s=3600)


def test_rerun_after_sigkill_mid_batch_pays_every_order_once_without_spending_the_limit_twice(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    fake_stripe: FakeStripe,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    land_orders(ledger_database)
    namespace = f"{redis_key_prefix}orders"
    killed = ledger_worker(ledger_database, fake_stripe.base_url, redis_server, namespace, RATE, kill_after=7)
    killed.go()

    killed.wait_killed()
    # Charges the killed process had sent besides may still complete at the server.
    assert 7 <= len(fake_stripe.succeeded_intents()) < CUSTOMERS * ORDERS_PER_CUSTOMER

    # The rerun's calls get a production-like timeout and a breaker of their own: on a loaded machine the
    # fixture's 0.5 s timeouts can open the breaker, and an open breaker rightly defers reconciliation
    # for its reset time, longer than this test waits; the claim here is the exactly-once payment.
    patient = StripeGateway(
        api_key="sk_test_hub",
        api_base=fake_stripe.base_url,
        call_timeout_s=5.0,
        initial_backoff_s=0.0,
        backoff_jitter_s=0.0,
        breaker_name=f"stripe-rerun-{uuid.uuid4().hex[:8]}",
    )
    rerun = make_processor(patient, rate_limiter=RateLimiter(RATE, redis_server, namespace=namespace))
    # A charge that timed out leaves its order PAYMENT_UNKNOWN; the next batch looks the charge up and
    # asks the gateway again with the same key, as the next run would.
    rerun_until_settled(rerun, ledger_database)

    assert_every_order_paid_once(ledger_database, fake_stripe)


def test_two_overlapping_ledger_processes_pay_every_order_once_under_a_shared_limit(
    ledger_database: PostgresDatabase,
    fake_stripe: FakeStripe,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    land_orders(ledger_database)
    namespace = f"{redis_key_prefix}orders"
    ledgers = [
        ledger_worker(ledger_database, fake_stripe.base_url, redis_server, namespace, RATE) for _ in range(2)
    ]

    counts = run_to_the_end(ledgers)

    assert counts["paid"] == CUSTOMERS * ORDERS_PER_CUSTOMER
    assert counts["rejected"] == 0
    assert_every_order_paid_once(ledger_database, fake_stripe)


FLASH_STOCK = {"p-flash-a": 40, "p-flash-b": 25}


def flash_sale_orders() -> list[dict[str, object]]:
    """More than twice each product's stock in one-unit orders of it alone, and orders of both."""
    single = [("p-flash-a", 1, "9.00")], [("p-flash-b", 1, "7.00")]
    both = [("p-flash-a", 1, "9.00"), ("p-flash-b", 1, "7.00")]
    items = [single[0]] * 90 + [single[1]] * 60 + [both] * 40
    random.Random(15).shuffle(items)
    return [order_event(customer=f"c-{n}", items=order) for n, order in enumerate(items)]


def test_three_ledger_processes_with_their_own_engines_sell_exactly_the_stock_of_shared_products(
    ledger_database: PostgresDatabase,
    fake_stripe: FakeStripe,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    catalog = Catalog(ledger_database)
    catalog.upsert("p-flash-a", "Flash print A", "USD", 900, FLASH_STOCK["p-flash-a"])
    catalog.upsert("p-flash-b", "Flash print B", "USD", 700, FLASH_STOCK["p-flash-b"])
    events = flash_sale_orders()
    Inbox(ledger_database).land_events(events)
    namespace = f"{redis_key_prefix}orders"
    ledgers = [
        ledger_worker(ledger_database, fake_stripe.base_url, redis_server, namespace, "1000/minute")
        for _ in range(3)
    ]

    counts = run_to_the_end(ledgers)

    with ledger_database.transaction() as connection:
        stock = dict(connection.execute(sa.select(products.c.product_id, products.c.stock)).all())
        sold = dict(
            connection.execute(
                sa.select(order_items.c.product_id, sa.func.sum(order_items.c.quantity))
                .join(orders, orders.c.order_id == order_items.c.order_id)
                .where(orders.c.status == PAID)
                .group_by(order_items.c.product_id)
            ).all()
        )
        reasons = connection.execute(sa.select(dead_letters.c.reason)).scalars().all()
    # Each product's one-unit orders alone ask for more than its stock, and a product's stock only
    # falls (nothing is declined): a rejected one-unit order saw it at 0, so it ends at 0.
    assert {product: stock[product] for product in FLASH_STOCK} == dict.fromkeys(FLASH_STOCK, 0)
    assert sold == FLASH_STOCK
    assert counts["paid"] + counts["rejected"] == len(events)
    assert len(reasons) == counts["rejected"]
    assert all(reason.startswith("insufficient stock for Flash print") for reason in reasons)
    assert len(fake_stripe.succeeded_intents()) == counts["paid"]
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)
