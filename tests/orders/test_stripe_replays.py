"""Stripe's saved responses: a 500 saved after execution is replayed for the key, and the ledger finds the
truth behind it by the order id, charging every order at most once and losing none."""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from hub_pipelines.core.ports import PAID as CHARGE_PAID
from hub_pipelines.core.ports import ChargeOutcomeHidden, ChargeRequest
from hub_pipelines.core.rate_limit import RateLimiter
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.tables import FAILED, FINAL_STATUSES, PAID, PAYMENT_UNKNOWN, orders
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import (
    ERROR,
    ERROR_AFTER_CHARGE,
    ERROR_IN_EXECUTION,
    KEY_TTL_S,
    STALL,
    FakeStripe,
)
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, ledger_worker, order_event, rerun_until_settled, run_to_the_end
from tests.orders.test_ledger_processes import CUSTOMERS, ORDERS_PER_CUSTOMER, RATE, land_orders

INTENT = {
    "amount": "1250",
    "currency": "usd",
    "confirm": "true",
    "payment_method": "pm_card_visa",
    "metadata[order_id]": "o-1",
}


def statuses(database: PostgresDatabase) -> dict[str, str]:
    with database.transaction() as connection:
        return dict(connection.execute(sa.select(orders.c.order_id, orders.c.status)).all())


def post(fake: FakeStripe, key: str, **changes: str) -> httpx.Response:
    return httpx.post(
        f"{fake.base_url}/v1/payment_intents",
        data={**INTENT, **changes},
        headers={"Idempotency-Key": key, "Authorization": "Bearer sk_test_hub"},
    )


def test_fake_stripe_saves_a_500_after_execution_and_replays_it_for_the_same_key(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.fail_next(ERROR_AFTER_CHARGE)

    first, again = post(fake_stripe, "k-1"), post(fake_stripe, "k-1")

    assert first.status_code == again.status_code == 500
    assert again.headers["Idempotent-Replayed"] == "true" and again.content == first.content
    assert len(fake_stripe.succeeded_intents("o-1")) == 1


def test_fake_stripe_does_not_save_a_500_before_execution(fake_stripe: FakeStripe) -> None:
    fake_stripe.fail_next(ERROR)

    first, again = post(fake_stripe, "k-2"), post(fake_stripe, "k-2")

    assert first.status_code == 500 and first.headers["Stripe-Should-Retry"] == "true"
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert len(fake_stripe.succeeded_intents("o-1")) == 1


def test_fake_stripe_rejects_a_key_reused_with_other_parameters_and_forgets_keys_after_24_hours(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.fail_next(ERROR_IN_EXECUTION)
    assert post(fake_stripe, "k-3").status_code == 500

    reused = post(fake_stripe, "k-3", amount="999")
    fake_stripe.age_keys(KEY_TTL_S)
    after_expiry = post(fake_stripe, "k-3")

    assert reused.status_code == 400 and reused.json()["error"]["type"] == "idempotency_error"
    assert after_expiry.status_code == 200 and "Idempotent-Replayed" not in after_expiry.headers
    assert len(fake_stripe.succeeded_intents("o-1")) == 1


def test_fake_stripe_answers_409_to_the_same_key_while_its_first_request_executes(
    fake_stripe: FakeStripe,
) -> None:
    answers: list[httpx.Response] = []

    def send_the_same_key_again(intent: dict[str, object]) -> None:
        fake_stripe.on_charge = None
        answers.append(post(fake_stripe, "k-5"))

    fake_stripe.on_charge = send_the_same_key_again
    first = post(fake_stripe, "k-5")
    after = post(fake_stripe, "k-5")

    (during,) = answers
    assert during.status_code == 409 and during.json()["error"]["type"] == "idempotency_error"
    assert first.status_code == 200 and after.headers["Idempotent-Replayed"] == "true"
    assert after.json()["id"] == first.json()["id"]
    assert len(fake_stripe.succeeded_intents("o-1")) == 1


def test_fake_stripe_executes_no_request_whose_body_never_fully_arrived(fake_stripe: FakeStripe) -> None:
    body = urlencode(INTENT).encode()
    host, port = fake_stripe.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(
            b"POST /v1/payment_intents HTTP/1.1\r\nHost: stripe\r\nIdempotency-Key: k-6\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b""

    complete = post(fake_stripe, "k-6")

    assert complete.status_code == 200 and "Idempotent-Replayed" not in complete.headers
    assert len(fake_stripe.intents) == 1 and len(fake_stripe.succeeded_intents("o-1")) == 1


def test_fake_stripe_saves_nothing_for_a_request_missing_a_required_parameter(
    fake_stripe: FakeStripe,
) -> None:
    incomplete = httpx.post(
        f"{fake_stripe.base_url}/v1/payment_intents",
        data={name: value for name, value in INTENT.items() if name != "amount"},
        headers={"Idempotency-Key": "k-7", "Authorization": "Bearer sk_test_hub"},
    )
    complete = post(fake_stripe, "k-7")

    assert incomplete.status_code == 400 and incomplete.json()["error"]["code"] == "parameter_missing"
    assert complete.status_code == 200 and "Idempotent-Replayed" not in complete.headers
    assert fake_stripe.intents.keys() == {complete.json()["id"]}


def test_fake_stripe_search_finds_intents_by_metadata_once_indexed(fake_stripe: FakeStripe) -> None:
    fake_stripe.pause_indexing()
    post(fake_stripe, "k-4")
    search = f"{fake_stripe.base_url}/v1/payment_intents/search"
    query = {"query": "metadata['order_id']:'o-1' AND status:'succeeded'"}

    lagging = httpx.get(search, params=query).json()
    fake_stripe.resume_indexing()
    indexed = httpx.get(search, params=query).json()

    assert lagging["object"] == "search_result" and lagging["data"] == []
    assert [intent["metadata"]["order_id"] for intent in indexed["data"]] == ["o-1"]
    assert httpx.get(search, params={"query": "amount>1"}).status_code == 400


def test_gateway_resolves_a_replayed_500_after_the_charge_to_the_charge_found_by_order_id(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    request = ChargeRequest(str(uuid.uuid4()), 1250, "USD", "c-1")
    fake_stripe.fail_next(ERROR_AFTER_CHARGE)

    result = stripe_gateway.charge(request)

    (intent,) = fake_stripe.succeeded_intents(request.order_id)
    assert (result.outcome, result.reference) == (CHARGE_PAID, intent["id"])
    assert fake_stripe.replays == 1 and fake_stripe.searches == 1


def test_gateway_leaves_a_replayed_500_with_no_charge_found_unknown_never_declined(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    request = ChargeRequest(str(uuid.uuid4()), 1250, "USD", "c-1")
    fake_stripe.fail_next(ERROR_IN_EXECUTION)

    with pytest.raises(ChargeOutcomeHidden, match=f"order {request.order_id}: stripe replays HTTP 500"):
        stripe_gateway.charge(request)

    assert fake_stripe.succeeded_intents(request.order_id) == []
    assert fake_stripe.replays == 1 and fake_stripe.searches == 1


def test_replayed_500_while_search_lags_keeps_the_order_unknown_and_pages_then_resolves_to_the_one_charge(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    alerts: list[tuple[str, str]] = []
    ledger = make_processor(stripe_gateway, alert=lambda subject, reason: alerts.append((subject, reason)))
    fake_stripe.pause_indexing()
    fake_stripe.fail_next(ERROR_AFTER_CHARGE)

    ledger.process_batch()
    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN
    assert [subject for subject, _ in alerts] == [order_id]
    ledger.process_batch()
    assert statuses(ledger_database) == {order_id: PAYMENT_UNKNOWN}
    assert len(alerts) == 1

    fake_stripe.resume_indexing()
    report = ledger.process_batch()

    assert report.reconciled == {"paid": 1}
    assert statuses(ledger_database) == {order_id: PAID}
    (intent,) = fake_stripe.succeeded_intents(order_id)
    with ledger_database.transaction() as connection:
        reference = connection.execute(
            sa.select(orders.c.payment_reference).where(orders.c.order_id == order_id)
        ).scalar_one()
    assert reference == intent["id"]
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_replayed_500_without_a_charge_is_charged_with_the_same_key_only_once_the_key_expired(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    ledger = make_processor(stripe_gateway)
    fake_stripe.fail_next(ERROR_IN_EXECUTION)

    ledger.process_batch()
    ledger.process_batch()
    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN and fake_stripe.succeeded_intents() == []

    fake_stripe.age_keys(KEY_TTL_S)
    ledger.process_batch()

    assert statuses(ledger_database) == {order_id: PAID}
    assert len(fake_stripe.succeeded_intents(order_id)) == 1
    assert len(fake_stripe.succeeded_intents()) == 1
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_order_reconciled_after_its_key_expired_finds_its_charge_instead_of_charging_again(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    ledger = make_processor(stripe_gateway.model_copy(update={"attempts": 1}))
    fake_stripe.fail_next(STALL)

    ledger.process_batch()
    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN
    fake_stripe.age_keys(KEY_TTL_S)
    ledger.process_batch()

    assert statuses(ledger_database) == {order_id: PAID}
    assert len(fake_stripe.succeeded_intents()) == 1


def test_charges_equal_paid_orders_under_5xx_after_execution_and_timeouts_after_charge(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    faults = fake_stripe.faults
    faults.error_rate = 0.1
    faults.error_after_charge_rate = 0.3
    faults.error_in_execution_rate = 0.1
    faults.timeout_after_charge_rate = 0.2
    faults.decline_rate = 0.1
    Inbox(ledger_database).land_events(
        order_event(customer=f"c-{n}", items=[("p-cup", 1, "12.50")]) for n in range(60)
    )
    ledger = make_processor(stripe_gateway.model_copy(update={"breaker_fail_max": 10_000}))

    # A day passes between batches: keys with a saved 500 and no charge behind it expire.
    rerun_until_settled(ledger, ledger_database, batches=8, between=lambda: fake_stripe.age_keys(KEY_TTL_S))

    final = statuses(ledger_database)
    assert len(final) == 60 and set(final.values()) <= FINAL_STATUSES
    paid = {order_id for order_id, status in final.items() if status == PAID}
    for order_id, status in final.items():
        assert len(fake_stripe.succeeded_intents(order_id)) == (1 if status == PAID else 0), order_id
    assert len(fake_stripe.succeeded_intents()) == len(paid)
    assert FAILED in final.values() and fake_stripe.replays > 0
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_two_ledger_processes_under_replayed_5xx_and_timeouts_charge_exactly_the_paid_orders(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    faults = fake_stripe.faults
    faults.error_after_charge_rate = 0.25
    faults.error_in_execution_rate = 0.1
    faults.timeout_after_charge_rate = 0.15
    faults.decline_rate = 0.1
    land_orders(ledger_database)
    namespace = f"{redis_key_prefix}orders"
    ledgers = [
        ledger_worker(ledger_database, fake_stripe.base_url, redis_server, namespace, RATE) for _ in range(2)
    ]
    run_to_the_end(ledgers)

    rerun = make_processor(
        stripe_gateway.model_copy(update={"breaker_fail_max": 10_000}),
        rate_limiter=RateLimiter(RATE, redis_server, namespace=namespace),
    )
    # A day passes between batches: keys with a saved 500 and no charge behind it expire.
    rerun_until_settled(rerun, ledger_database, batches=8, between=lambda: fake_stripe.age_keys(KEY_TTL_S))

    final = statuses(ledger_database)
    assert len(final) == CUSTOMERS * ORDERS_PER_CUSTOMER and set(final.values()) <= FINAL_STATUSES
    for order_id, status in final.items():
        assert len(fake_stripe.succeeded_intents(order_id)) == (1 if status == PAID else 0), order_id
    assert len(fake_stripe.succeeded_intents()) == list(final.values()).count(PAID)
    assert fake_stripe.replays > 0
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_reconciliation_while_the_breaker_is_open_defers_without_calling_stripe(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    ledger = make_processor(stripe_gateway.model_copy(update={"attempts": 1, "breaker_fail_max": 1}))
    fake_stripe.fail_next(STALL)
    ledger.process_batch()
    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN and ledger.gateway.breaker_state() == "open"
    calls = (fake_stripe.requests, fake_stripe.searches)

    report = ledger.process_batch()

    assert report.reconciled == {"deferred": 1}
    assert (fake_stripe.requests, fake_stripe.searches) == calls
    assert statuses(ledger_database) == {order_id: PAYMENT_UNKNOWN}
