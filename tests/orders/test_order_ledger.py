"""The order ledger end to end on PostgreSQL: inbox events -> orders, charges, ledger, outbox."""

from __future__ import annotations

import jwt
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, orders, outbox
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, encode, hmac_headers, jwt_headers, order_event


def test_duplicate_order_event_creates_one_order_and_one_charge(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    event = order_event(items=[("p-cup", 2, "12.50")])
    payload = encode(event)
    redelivered_with_new_event_id = encode({**event, "event_id": "another-delivery"})
    inbox = Inbox(ledger_database)
    inbox.land([(payload, hmac_headers(payload))])
    inbox.land([(payload, hmac_headers(payload))])
    inbox.land([(redelivered_with_new_event_id, hmac_headers(redelivered_with_new_event_id))])
    ledger = make_processor(stripe_gateway)

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


def test_bad_input_is_dead_lettered_with_a_clear_reason_and_counts_reconcile(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    good = encode(order_event())
    cases: list[tuple[bytes, dict[str, bytes], str]] = []

    def case(payload: bytes, reason: str, headers: dict[str, bytes] | None = None) -> None:
        cases.append((payload, hmac_headers(payload) if headers is None else headers, reason))

    case(b'{"event_id": "e-broken", "type": ', "malformed JSON")
    case(
        encode({k: v for k, v in order_event().items() if k != "customer"}),
        "missing required field `customer`",
    )
    case(encode(order_event(items=[("p-cup", 1, 12.5)])), "not a JSON number")
    case(encode(order_event(items=[("p-cup", -1, "12.50")])), "$.items[0].quantity")
    case(encode(order_event(items=[("p-cup", 100000, "12.50")])), "$.items[0].quantity")
    case(encode(order_event(items=[("p-nope", 1, "1.00")])), "unknown product 'p-nope'")
    case(
        encode(order_event(items=[("p-cup", 1, "12.511")])),
        "price mismatch for Ceramic cup: sent 12.511, catalog 12.50",
    )
    expired = encode(order_event())
    case(expired, "JWT has expired", jwt_headers(expired, expires_in=-60))
    audience = encode(order_event())
    case(audience, "JWT audience is not 'hub-orders'", jwt_headers(audience, audience="other"))
    unsigned_none = encode(order_event())
    none_token = jwt.encode(
        {"iss": "hub-checkout", "aud": "hub-orders", "exp": 4102444800}, None, algorithm="none"
    )
    case(
        unsigned_none, "algorithm 'none' is not accepted", {"authorization": f"Bearer {none_token}".encode()}
    )
    case(good, "", None)
    inbox = Inbox(ledger_database)
    inbox.land((payload, headers) for payload, headers, _ in cases)

    report = make_processor(stripe_gateway).process_batch()

    with ledger_database.transaction() as connection:
        letters = connection.execute(
            sa.select(dead_letters.c.offset, dead_letters.c.reason, dead_letters.c.source).order_by(
                dead_letters.c.offset
            )
        ).all()
        landing_letters = [row for row in letters if row[2] != "orders-intake"]
        intake_letters = {
            int(offset): reason for offset, reason, source in letters if source == "orders-intake"
        }
    # The malformed JSON has no event id: the landing layer dead-letters it; the rest reach intake.
    assert len(landing_letters) == 1
    assert "undecodable event" in landing_letters[0][1]
    for offset, (_, _, reason) in enumerate(cases[1:-1], start=1):
        assert reason in intake_letters[offset], (offset, intake_letters.get(offset))
    assert report.count("rejected") == len(cases) - 2
    assert report.count("paid") == 1
    assert sum(report.counts.values()) + len(landing_letters) == len(cases)
