"""An order that stays without a payment outcome past the bound fails the ledger's check and pages once;
once it settles the check passes and nothing pages again. Stripe is the fake server on its protocol,
the ledger PostgreSQL, the pager the local `LogNotifier` (the same `Notifier` PagerDuty's implements)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines.assets.orders import ledger
from hub_pipelines.orders.attempts import order_subject, record_failure
from hub_pipelines.orders.idempotency import order_id_for
from hub_pipelines.orders.ledger_batch import LedgerBatch, run_ledger_batch
from hub_pipelines.orders.overdue_payments import outcome_overdue_dedup_key
from hub_pipelines.orders.pii import new_key_setting
from hub_pipelines.orders.tables import PAID, PAYMENT_UNKNOWN, orders
from hub_pipelines.resources.cache import InProcessCache
from hub_pipelines.resources.notifier import LogNotifier, PagerDutySlackNotifier
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import KEY_TTL_S, FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import (
    HMAC_SECRET,
    Inbox,
    WorkerProcess,
    order_event,
    row_holder,
    wait_until_blocked_by,
)
from tests.orders.test_stripe_replays import post, statuses
from tests.services import free_port

BOUND_S = 900.0
CUSTOMER = "c-stuck"


def orders_stripe_refuses(database: PostgresDatabase, fake_stripe: FakeStripe, count: int = 1) -> list[str]:
    """Land orders whose payment keys Stripe already holds for other requests (another amount, another
    order in the metadata): every charge with one gets 400 idempotency_error until Stripe forgets it."""
    keys = [f"k-stuck-{n}" for n in range(count)]
    order_ids = [order_id_for(CUSTOMER, key) for key in keys]
    for order_id in order_ids:
        assert post(fake_stripe, order_id, amount="999").status_code == 200
    Inbox(database).land_events(
        order_event(idempotency_key=key, customer=CUSTOMER, items=[("p-cup", 1, "12.50")]) for key in keys
    )
    return order_ids


def reserved_earlier(database: PostgresDatabase, seconds: float) -> None:
    with database.transaction() as connection:
        connection.execute(
            sa.update(orders).values(created_at=orders.c.created_at - timedelta(seconds=seconds))
        )


def ledger_batch(make_processor: ProcessorFactory, gateway: StripeGateway, pager: LogNotifier) -> LedgerBatch:
    # A processor per batch, as each run builds its own.
    return run_ledger_batch(make_processor(gateway), 100, None, pager, BOUND_S)


def settle_check(batch: LedgerBatch) -> dg.AssetCheckResult:
    return ledger.overdue_result(batch.overdue)


@pytest.fixture
def overdue_order(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> str:
    """An order one batch left PAYMENT_UNKNOWN (its key refused), reserved twice the bound ago."""
    (order_id,) = orders_stripe_refuses(ledger_database, fake_stripe)
    make_processor(stripe_gateway).process_batch()
    reserved_earlier(ledger_database, 2 * BOUND_S)
    return order_id


def test_order_refused_with_idempotency_error_every_time_stays_unknown_fails_the_check_and_pages_once(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    (order_id,) = orders_stripe_refuses(ledger_database, fake_stripe)
    pager = LogNotifier()

    young = ledger_batch(make_processor, stripe_gateway, pager)
    assert statuses(ledger_database) == {order_id: PAYMENT_UNKNOWN}
    assert settle_check(young).passed and pager.sent == []

    reserved_earlier(ledger_database, 2 * BOUND_S)
    overdue = ledger_batch(make_processor, stripe_gateway, pager)
    again = ledger_batch(make_processor, stripe_gateway, pager)

    assert statuses(ledger_database) == {order_id: PAYMENT_UNKNOWN}
    for batch in (overdue, again):
        assert batch.report.reconciled == {"payment_unknown": 1}
        check = settle_check(batch)
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert check.metadata["overdue"].value == 1 and check.metadata["oldest_age_s"].value >= 2 * BOUND_S
        (named,) = check.metadata["oldest"].value
        assert named.startswith(f"order {order_id} (PAYMENT_UNKNOWN") and "idempotency" in named.lower()
    (page,) = pager.sent
    assert (page.action, page.dedup_key) == ("trigger", outcome_overdue_dedup_key(order_id))
    assert order_id in page.summary and "metadata.order_id" in page.summary
    assert fake_stripe.succeeded_intents(order_id) == []


def test_overdue_order_that_settles_later_passes_the_check_and_pages_no_more(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    (order_id,) = orders_stripe_refuses(ledger_database, fake_stripe)
    pager = LogNotifier()
    ledger_batch(make_processor, stripe_gateway, pager)
    reserved_earlier(ledger_database, 2 * BOUND_S)
    assert not settle_check(ledger_batch(make_processor, stripe_gateway, pager)).passed
    assert len(pager.sent) == 1

    # Stripe forgets the key after 24 h: the same key, sent again, charges the order once.
    fake_stripe.age_keys(KEY_TTL_S)
    settled = ledger_batch(make_processor, stripe_gateway, pager)
    after = ledger_batch(make_processor, stripe_gateway, pager)

    assert settled.report.reconciled == {"paid": 1}
    assert statuses(ledger_database) == {order_id: PAID}
    assert len(fake_stripe.succeeded_intents(order_id)) == 1
    for batch in (settled, after):
        check = settle_check(batch)
        assert check.passed and check.metadata["overdue"].value == 0
    assert len(pager.sent) == 1


def test_overdue_page_pagerduty_did_not_take_is_sent_by_a_later_batch(
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    overdue_order: str,
) -> None:
    order_id = overdue_order
    # Nothing listens there: the PagerDuty client's POST is refused.
    unreachable = PagerDutySlackNotifier(
        pagerduty_routing_key="routing-key", pagerduty_url=f"http://127.0.0.1:{free_port()}/v2/enqueue"
    )
    pager = LogNotifier()

    undelivered = run_ledger_batch(make_processor(stripe_gateway), 100, None, unreachable, BOUND_S)
    delivered = ledger_batch(make_processor, stripe_gateway, pager)
    ledger_batch(make_processor, stripe_gateway, pager)

    assert not settle_check(undelivered).passed and not settle_check(delivered).passed
    assert [page.dedup_key for page in pager.sent] == [outcome_overdue_dedup_key(order_id)]


def test_two_lane_processes_paging_at_once_page_each_overdue_order_once(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    order_ids = orders_stripe_refuses(ledger_database, fake_stripe, count=6)
    make_processor(stripe_gateway).process_batch()
    reserved_earlier(ledger_database, 2 * BOUND_S)
    url = ledger_database.engine.url.render_as_string(hide_password=False)
    lanes = [WorkerProcess("page-overdue", url, str(BOUND_S)) for _ in range(2)]
    for lane in lanes:
        lane.wait_ready()

    with row_holder(ledger_database) as (holder, pid):
        # Both claims wait on the same held rows, then race for them once they are let go.
        holder.execute(sa.select(orders.c.order_id).with_for_update())
        for lane in lanes:
            lane.go()
        wait_until_blocked_by(
            ledger_database,
            pid,
            lambda: all(lane.running() for lane in lanes),
            "UPDATE orders SET outcome_overdue_paged_at%",
            backends=2,
        )
        holder.rollback()
    paged = [lane.counts() for lane in lanes]

    assert sum(paged, Counter()) == Counter(dict.fromkeys(order_ids, 1))
    assert statuses(ledger_database) == dict.fromkeys(order_ids, PAYMENT_UNKNOWN)


def test_old_paid_orders_pass_the_settle_check_and_page_nobody(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events(
        order_event(customer=f"c-{n}", items=[("p-cup", 1, "12.50")]) for n in range(3)
    )
    pager = LogNotifier()
    ledger_batch(make_processor, stripe_gateway, pager)
    reserved_earlier(ledger_database, 2 * BOUND_S)

    batch = ledger_batch(make_processor, stripe_gateway, pager)

    assert set(statuses(ledger_database).values()) == {PAID}
    assert settle_check(batch).passed and pager.sent == []


def test_parked_overdue_order_is_left_to_its_parking_alert_neither_counted_nor_paged(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    overdue_order: str,
) -> None:
    order_id = overdue_order
    assert record_failure(ledger_database, order_subject(order_id), RuntimeError("a bug"), max_attempts=1)
    pager = LogNotifier()

    batch = ledger_batch(make_processor, stripe_gateway, pager)

    assert statuses(ledger_database) == {order_id: PAYMENT_UNKNOWN}
    assert settle_check(batch).passed and pager.sent == []


def test_order_ledger_asset_reports_the_overdue_order_in_its_settle_check(
    ledger_database: PostgresDatabase,
    stripe_gateway: StripeGateway,
    overdue_order: str,
) -> None:
    order_id = overdue_order
    resources = {
        "database": ledger_database,
        "cache": InProcessCache(),
        "payment_gateway": stripe_gateway,
        "pager": LogNotifier(),
        "order_settings": OrderLedgerSettings(
            hmac_secret=HMAC_SECRET, pii_keys=new_key_setting(), payment_outcome_bound_s=BOUND_S
        ),
    }

    result = dg.materialize([ledger.order_ledger], resources=resources)

    assert result.success
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    settle = checks[ledger.SETTLE_CHECK]
    assert not settle.passed and settle.severity == dg.AssetCheckSeverity.ERROR
    assert settle.metadata["overdue"].value == 1
    (named,) = settle.metadata["oldest"].value
    assert named.startswith(f"order {order_id} (PAYMENT_UNKNOWN")
    assert all(check.passed for name, check in checks.items() if name != ledger.SETTLE_CHECK)
    with ledger_database.transaction() as connection:
        paged_at = connection.execute(
            sa.select(orders.c.outcome_overdue_paged_at).where(orders.c.order_id == order_id)
        ).scalar_one()
    assert paged_at is not None
