"""The order ledger end to end on PostgreSQL: inbox events -> orders, charges, ledger, outbox."""

from __future__ import annotations

import sqlalchemy as sa

from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, orders, outbox
from hub_pipelines.resources.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import LedgerFactory
from tests.orders.support import Inbox, encode, hmac_headers, order_event


def test_duplicate_order_event_creates_one_order_and_one_charge(
    ledger_database: PostgresDatabase, make_ledger: LedgerFactory, stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    event = order_event(items=[("p-cup", 2, "12.50")])
    payload = encode(event)
    redelivered_with_new_event_id = encode({**event, "event_id": "another-delivery"})
    inbox = Inbox(ledger_database)
    inbox.land([(payload, hmac_headers(payload))])
    inbox.land([(payload, hmac_headers(payload))])
    inbox.land([(redelivered_with_new_event_id, hmac_headers(redelivered_with_new_event_id))])
    ledger = make_ledger(stripe_gateway)

    first = ledger.process_batch()
    second = ledger.process_batch()

    with ledger_database.transaction() as connection:
        rows = connection.execute(sa.select(orders.c.order_id, orders.c.status, orders.c.total_minor)).all()
        created = connection.execute(
            sa.select(sa.func.count()).where(outbox.c.event_type == "order.created")
        ).scalar_one()
    assert [(status, total) for _, status, total in rows] == [(PAID, 2500)]
    assert len(fake_stripe.succeeded_intents(rows[0][0])) == 1
    assert first.count("paid") == 1 and first.count("duplicate") == 1
    assert sum(second.counts.values()) == 0
    assert created == 1
    invariants = check_invariants(ledger_database)
    assert invariants.duplicates_rejected == invariants.duplicates_sent == 1
    assert invariants.holds(outbox_bound_s=3600)
