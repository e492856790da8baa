"""One order never stops the ledger: hostile input is dead-lettered with a reason, an internal error
is retried across batches and then parked with an alert, and the rest of the batch goes on."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping

import jwt
import pytest
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.core.ports import ChargeRequest, ChargeResult
from hub_pipelines.core.rate_limit import RateLimiter, RateLimitStoreUnavailable
from hub_pipelines.orders.authenticity import AUTHORIZATION_HEADER, PAYLOAD_HASH_CLAIM
from hub_pipelines.orders.catalog import Catalog, Product
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import PAID, RESERVED, ledger_attempts, order_intake, orders
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import JWT_SECRET, Inbox, encode, hmac_headers, order_event

Alerts = list[tuple[str, str]]


def text(headers: Mapping[str, bytes]) -> dict[str, str]:
    return {name: value.decode() for name, value in headers.items()}


def signed(event: dict) -> tuple[str, bytes, dict[str, str]]:
    payload = encode(event)
    return event["event_id"], payload, text(hmac_headers(payload))


def intake_dead_letters(database: PostgresDatabase) -> dict[int, str]:
    with database.transaction() as connection:
        rows = connection.execute(
            sa.select(dead_letters.c.offset, dead_letters.c.reason).where(
                dead_letters.c.source == "orders-intake"
            )
        ).all()
    return {int(offset): reason for offset, reason in rows}


def statuses(database: PostgresDatabase) -> dict[str, str]:
    with database.transaction() as connection:
        return dict(connection.execute(sa.select(orders.c.customer_id, orders.c.status)).all())


def test_poison_from_the_issue_is_dead_lettered_by_name_and_the_order_behind_it_is_paid(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    unsigned_hash = encode(order_event())
    token = jwt.encode(
        {"iss": "hub-checkout", "aud": "hub-orders", "exp": int(time.time()) + 300, PAYLOAD_HASH_CLAIM: "é"},
        JWT_SECRET,
        algorithm="HS256",
    )
    deep = b'{"event_id": "e-deep", "type": "order.placed", "extra": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    cases: list[tuple[tuple[str, bytes, dict[str, str]], str]] = [
        (
            ("e-sig", unsigned_hash, {"x-hub-signature-256": "sha256=é"}),
            "x-hub-signature-256 is not of the form",
        ),
        (
            ("e-jwt", unsigned_hash, {AUTHORIZATION_HEADER: f"Bearer {token}"}),
            "JWT payload_sha256 is not 64 lowercase hex digits",
        ),
        (
            signed(order_event(items=[("p-cup", 1, "1E+999999999")])),
            "items[0].unit_price: '1E+999999999' is out of range",
        ),
        (signed(order_event(customer="c-\x00")), "customer.id: control character U+0000 at position 2"),
        (signed(order_event(idempotency_key="k-\x00")), "idempotency_key: control character U+0000"),
        (signed(order_event(payment_method="pm_\x00")), "payment_method: control character U+0000"),
        (signed(order_event(items=[("p-\x00", 1, "1.00")])), "items[0].product_id: control character U+0000"),
        (("e-deep", deep, text(hmac_headers(deep))), "malformed JSON: nested too deeply"),
    ]
    inbox = Inbox(ledger_database)
    offsets = inbox.store(message for message, _ in cases)
    inbox.store([signed(order_event(customer="c-behind-the-poison"))])

    report = make_processor(stripe_gateway).process_batch()

    letters = intake_dead_letters(ledger_database)
    for offset, (_, reason) in zip(offsets, cases, strict=True):
        assert reason in letters[offset], (offset, letters.get(offset))
    assert report.count("rejected") == len(cases)
    assert statuses(ledger_database) == {"c-behind-the-poison": PAID}


class CursedCatalog(Catalog):
    """A catalog with a bug that strikes one product: stands in for any error no rule foresaw."""

    def products(self, product_ids: Iterable[str]) -> dict[str, Product]:
        wanted = list(product_ids)
        if "p-cursed" in wanted:
            raise ZeroDivisionError("catalog bug on p-cursed")
        return super().products(wanted)


def test_unexpected_error_of_one_event_is_retried_then_parked_with_an_alert_while_others_are_paid(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Catalog(ledger_database).upsert("p-cursed", "Cursed mug", "USD", 900, 10)
    inbox = Inbox(ledger_database)
    (cursed_offset,) = inbox.store(
        [signed(order_event(customer="c-cursed", items=[("p-cursed", 1, "9.00")]))]
    )
    inbox.store(signed(order_event(customer=f"c-{n}")) for n in range(5))
    alerts: Alerts = []
    ledger = make_processor(
        stripe_gateway, catalog=CursedCatalog(ledger_database), alert=lambda *alert: alerts.append(alert)
    )

    reports = [ledger.process_batch() for _ in range(4)]

    assert [report.counts for report in reports] == [{"paid": 5, "retry": 1}, {"retry": 1}, {"parked": 1}, {}]
    subject = f"event orders partition 0 offset {cursed_offset}"
    assert [alert[0] for alert in alerts] == [subject]
    assert alerts[0][1].startswith("internal: ZeroDivisionError after 3 attempts: catalog bug on p-cursed")
    assert intake_dead_letters(ledger_database)[cursed_offset] == alerts[0][1]
    with ledger_database.transaction() as connection:
        attempts, parked_at = connection.execute(
            sa.select(ledger_attempts.c.attempts, ledger_attempts.c.parked_at).where(
                ledger_attempts.c.subject == subject
            )
        ).one()
    assert attempts == 3 and parked_at is not None
    assert list(statuses(ledger_database).values()) == [PAID] * 5


REPLAY_PARKED_EVENT = [
    """DELETE FROM order_intake WHERE topic = 'orders' AND "partition" = :partition AND "offset" = :offset
       AND outcome IN ('rejected', 'parked')""",
    """DELETE FROM dead_letters WHERE source = 'orders-intake' AND topic = 'orders'
       AND "partition" = :partition AND "offset" = :offset""",
    "DELETE FROM ledger_attempts WHERE subject = 'event orders partition ' || :partition || ' offset ' || :offset",
]
"""The replay of docs/operations.md ("Dead letters of the order ledger")."""


def test_parked_event_replayed_as_the_runbook_says_after_the_fix_is_paid(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Catalog(ledger_database).upsert("p-cursed", "Cursed mug", "USD", 900, 10)
    (offset,) = Inbox(ledger_database).store(
        [signed(order_event(customer="c-cursed", items=[("p-cursed", 1, "9.00")]))]
    )
    broken = make_processor(stripe_gateway, catalog=CursedCatalog(ledger_database), max_attempts=1)
    assert broken.process_batch().counts == {"parked": 1}

    with ledger_database.transaction() as connection:
        for statement in REPLAY_PARKED_EVENT:
            connection.execute(sa.text(statement), {"partition": 0, "offset": offset})
    fixed = make_processor(stripe_gateway)

    assert fixed.process_batch().counts == {"paid": 1}
    assert statuses(ledger_database) == {"c-cursed": PAID}
    assert offset not in intake_dead_letters(ledger_database)


@dataclasses.dataclass
class NulReferenceGateway:
    """Stripe answering one customer's charge with a reference PostgreSQL text cannot hold."""

    gateway: StripeGateway
    customer: str

    def charge(self, request: ChargeRequest) -> ChargeResult:
        result = self.gateway.charge(request)
        return self._spoiled(request, result)

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        found = self.gateway.find_charge(request)
        return None if found is None else self._spoiled(request, found)

    def _spoiled(self, request: ChargeRequest, result: ChargeResult) -> ChargeResult:
        if request.customer_id == self.customer:
            return dataclasses.replace(result, reference=f"{result.reference}\x00")
        return result

    def breaker_state(self) -> str:
        return self.gateway.breaker_state()


def test_database_refusing_one_orders_paid_row_fails_only_that_order_which_is_parked_after_retries(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events(order_event(customer=f"c-{n}") for n in range(12))
    alerts: Alerts = []
    ledger = make_processor(
        NulReferenceGateway(stripe_gateway, "c-7"),
        max_in_flight=8,
        alert=lambda *alert: alerts.append(alert),
    )

    reports = [ledger.process_batch() for _ in range(4)]

    assert reports[0].counts == {"paid": 11, "retry": 1}
    assert [report.reconciled for report in reports[1:]] == [{"retry": 1}, {"parked": 1}, {}]
    final = statuses(ledger_database)
    assert final.pop("c-7") == RESERVED
    assert set(final.values()) == {PAID} and len(final) == 11
    ((order_id, reason),) = alerts
    assert reason.startswith("internal: UntranslatableCharacter after 3 attempts")
    assert len(fake_stripe.succeeded_intents(order_id)) == 1
    invariants = check_invariants(ledger_database)
    assert not invariants.paid_without_one_charge and not invariants.unbalanced_postings


def test_rate_limit_store_outage_fails_the_batch_and_parks_nothing(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Inbox(ledger_database).land_events(order_event(customer=f"c-{n}") for n in range(3))
    # Port 1 on loopback: nothing listens, every call is refused.
    unreachable = RateLimiter("10/minute", "redis://127.0.0.1:1/0", namespace="outage")
    ledger = make_processor(stripe_gateway, rate_limiter=unreachable)

    with pytest.raises(RateLimitStoreUnavailable, match="rate limit store did not answer for 'outage:c-"):
        ledger.process_batch()

    with ledger_database.transaction() as connection:
        booked = connection.execute(sa.select(sa.func.count()).select_from(order_intake)).scalar_one()
        counted = connection.execute(sa.select(sa.func.count()).select_from(ledger_attempts)).scalar_one()
    assert booked == 0 and counted == 0
