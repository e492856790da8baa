"""Concurrency and failure: parallel workers, a chaotic gateway, a shared breaker, a crash mid-order."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import redis
import sqlalchemy as sa

from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.processing import OrderBatchProcessor
from hub_pipelines.orders.tables import FAILED, FINAL_STATUSES, PAID, orders, products
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, order_event

WORKER = [sys.executable, "-m", "tests.orders.worker_process"]


def statuses(database: PostgresDatabase) -> dict[str, str]:
    with database.transaction() as connection:
        return dict(connection.execute(sa.select(orders.c.order_id, orders.c.status)).all())


def stock_of(database: PostgresDatabase, product_id: str) -> int:
    with database.transaction() as connection:
        return int(
            connection.execute(
                sa.select(products.c.stock).where(products.c.product_id == product_id)
            ).scalar_one()
        )


def test_two_parallel_workers_sell_exactly_the_stock_and_reject_the_rest(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Catalog(ledger_database).upsert("p-limited", "Limited print", "USD", 5000, 50)
    Inbox(ledger_database).land_events(
        order_event(customer=f"c-{n}", items=[("p-limited", 1, "50.00")]) for n in range(200)
    )
    workers = [make_processor(stripe_gateway, max_in_flight=4) for _ in range(2)]
    start = threading.Barrier(2)
    reports = []

    def run(ledger: OrderBatchProcessor) -> None:
        start.wait()
        reports.append(ledger.process_batch())

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(report.count("paid") for report in reports) == 50
    assert sum(report.count("rejected") for report in reports) == 150
    assert stock_of(ledger_database, "p-limited") == 0
    assert list(statuses(ledger_database).values()).count(PAID) == 50
    with ledger_database.transaction() as connection:
        reasons = connection.execute(sa.text("SELECT reason FROM dead_letters")).scalars().all()
    assert len(reasons) == 150
    assert all(reason.startswith("insufficient stock for Limited print: requested 1") for reason in reasons)
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_payment_chaos_never_charges_twice_and_every_order_ends_final(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.faults.error_rate = 0.5
    fake_stripe.faults.timeout_after_charge_rate = 0.1
    fake_stripe.faults.decline_rate = 0.1
    alerts: list[tuple[str, str]] = []
    Inbox(ledger_database).land_events(
        order_event(customer=f"c-{n}", items=[("p-cup", 1, "12.50")]) for n in range(40)
    )
    ledger = make_processor(
        stripe_gateway.model_copy(update={"breaker_fail_max": 10_000}),
        alert=lambda order_id, reason: alerts.append((order_id, reason)),
    )

    for _ in range(6):
        ledger.process_batch()
        if set(statuses(ledger_database).values()) <= FINAL_STATUSES:
            break

    final = statuses(ledger_database)
    assert len(final) == 40 and set(final.values()) <= FINAL_STATUSES
    for order_id, status in final.items():
        assert len(fake_stripe.succeeded_intents(order_id)) == (1 if status == PAID else 0), order_id
    failed = {order_id for order_id, status in final.items() if status == FAILED}
    assert failed and {order_id for order_id, _ in alerts} == failed
    assert stock_of(ledger_database, "p-cup") == 1000 - (40 - len(failed))
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_breaker_opened_by_one_process_is_seen_by_another_and_closes_after_a_successful_trial(
    redis_server: str, redis_key_prefix: str, fake_stripe: FakeStripe
) -> None:
    name = f"{redis_key_prefix}stripe"
    here = StripeGateway(
        api_key="sk_test_hub", api_base=fake_stripe.base_url, attempts=1, breaker_redis_url=redis_server,
        breaker_name=name, call_timeout_s=2.0,
    )  # fmt: skip
    fake_stripe.fail_next(*["error"] * 5)
    outcomes = [_charge_outcome(here) for _ in range(5)]
    assert outcomes == ["unknown"] * 5
    assert here.breaker_state() == "open"
    requests_when_opened = fake_stripe.requests

    other = subprocess.Popen(
        [*WORKER, "breaker", redis_server, name, fake_stripe.base_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert _ask(other) == "unavailable open"
        assert fake_stripe.requests == requests_when_opened
        # The reset timeout (60 s) has passed, as far as the shared state can tell.
        redis.Redis.from_url(redis_server).set(
            f"hub:breaker:{name}:pybreaker:opened_at", int(time.time()) - 120
        )
        assert _ask(other) == "paid closed"
    finally:
        other.stdin.close()  # type: ignore[union-attr]
        other.wait(timeout=30)
    assert here.breaker_state() == "closed"


def _charge_outcome(gateway: StripeGateway) -> str:
    from hub_pipelines.core.ports import ChargeRequest, GatewayUnavailable, PaymentOutcomeUnknown

    try:
        return gateway.charge(ChargeRequest(str(uuid.uuid4()), 100, "USD", "c-1")).outcome
    except PaymentOutcomeUnknown:
        return "unknown"
    except GatewayUnavailable:
        return "unavailable"


def _ask(process: subprocess.Popen) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("charge\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_crash_after_charge_before_paid_commit_resumes_with_one_charge(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-frother", 1, "59.00")])])
    url = ledger_database.sqlalchemy_url.render_as_string(hide_password=False)

    crashed = subprocess.run([*WORKER, "crash-after-charge", url, fake_stripe.base_url], check=False)

    assert crashed.returncode == -9
    ((order_id, status),) = statuses(ledger_database).items()
    assert status == "RESERVED"
    assert len(fake_stripe.succeeded_intents(order_id)) == 1

    report = make_processor(stripe_gateway).process_batch()

    assert report.reconciled == {"paid": 1}
    assert statuses(ledger_database) == {order_id: PAID}
    assert len(fake_stripe.succeeded_intents(order_id)) == 1
    # Found by its order id before anything is sent again: the key may have expired meanwhile.
    assert fake_stripe.searches == 1 and fake_stripe.requests == 1
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)
