"""Idempotency keys as a payments engineer has them: scoped per customer, and a reused key with other
contents refused as a conflict (dead letter naming both events, and an alert), never booked as a duplicate."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, orders
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, order_event


@pytest.mark.parametrize(
    "other",
    [
        {"items": [("p-frother", 1, "59.00")]},
        {"items": [("p-cup", 2, "12.50")]},
        {"items": [("p-cup", 1, "12.51")]},
        {"payment_method": "pm_card_mastercard"},
    ],
    ids=["other-items", "other-quantity", "other-amount", "other-payment-method"],
)
def test_same_idempotency_key_with_other_contents_is_one_order_one_conflict_dead_letter_and_one_alert(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    other: dict[str, Any],
) -> None:
    first = order_event(idempotency_key="checkout-42", payment_method="pm_card_visa")
    reused = order_event(**{"idempotency_key": "checkout-42", "payment_method": "pm_card_visa", **other})
    Inbox(ledger_database).land_events([first, reused])
    alerts: list[tuple[str, str]] = []

    make_processor(stripe_gateway, alert=lambda *alert: alerts.append(alert)).process_batch()

    with ledger_database.transaction() as connection:
        booked = connection.execute(sa.select(orders.c.order_id, orders.c.event_id, orders.c.status)).all()
        letters = connection.execute(sa.select(dead_letters.c.offset, dead_letters.c.reason)).all()
    ((order_id, winner, status),) = booked
    assert status == PAID and len(fake_stripe.succeeded_intents(order_id)) == 1
    loser = reused["event_id"] if winner == first["event_id"] else first["event_id"]
    ((offset, reason),) = letters
    assert f"used by event {winner}" in reason and f"event {loser} is refused" in reason
    assert "idempotency key 'checkout-42' of customer 'c-1'" in reason
    assert alerts == [(f"event orders partition 0 offset {offset}", reason)]
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_same_idempotency_key_of_two_customers_is_two_orders(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Inbox(ledger_database).land_events(
        [
            order_event(idempotency_key="cart-1", customer="c-ada"),
            order_event(idempotency_key="cart-1", customer="c-bob", items=[("p-frother", 1, "59.00")]),
        ]
    )

    report = make_processor(stripe_gateway).process_batch()

    with ledger_database.transaction() as connection:
        booked = dict(connection.execute(sa.select(orders.c.customer_id, orders.c.status)).all())
    assert report.counts == {"paid": 2}
    assert booked == {"c-ada": PAID, "c-bob": PAID}
    invariants = check_invariants(ledger_database)
    assert invariants.duplicates_sent == invariants.duplicates_rejected == 0


@pytest.mark.parametrize(
    "other",
    [{"currency": "EUR"}, {"items": [("p-unknown", 1, "1.00")]}, {"items": [("p-sold-out", 1, "5.00")]}],
    ids=["other-currency", "unknown-product", "out-of-stock"],
)
def test_reused_key_whose_other_contents_fail_pricing_or_stock_is_still_a_conflict(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    other: dict[str, Any],
) -> None:
    Catalog(ledger_database).upsert("p-sold-out", "Sold-out print", "USD", 500, 0)
    first = order_event(idempotency_key="checkout-7")
    reused = order_event(**{"idempotency_key": "checkout-7", **other})
    inbox = Inbox(ledger_database)
    alerts: list[tuple[str, str]] = []
    ledger = make_processor(stripe_gateway, alert=lambda *alert: alerts.append(alert))
    inbox.land_events([first])
    ledger.process_batch()
    inbox.land_events([reused])

    report = ledger.process_batch()

    with ledger_database.transaction() as connection:
        (reason,) = connection.execute(sa.select(dead_letters.c.reason)).scalars().all()
    assert report.rejections == {"IdempotencyConflict": 1}
    assert (
        f"used by event {first['event_id']}" in reason and f"event {reused['event_id']} is refused" in reason
    )
    assert alerts == [("event orders partition 0 offset 1", reason)]
