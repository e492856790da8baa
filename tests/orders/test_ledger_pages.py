"""The ledger's alerts that need a person reach PagerDuty, once per incident under its dedup key, and a page
PagerDuty did not take is sent by a later batch; a declined payment and an idempotency conflict are only
logged. PagerDuty is a local HTTP receiver taking its Events API, the pager the real
`PagerDutySlackNotifier`, Stripe the fake server, the ledger PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from hub_pipelines.assets.orders import ledger
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.idempotency import order_id_for
from hub_pipelines.orders.ledger_pages import hidden_dedup_key
from hub_pipelines.orders.pii import new_key_setting
from hub_pipelines.orders.tables import FAILED, PAYMENT_UNKNOWN, RESERVED
from hub_pipelines.resources.cache import InProcessCache
from hub_pipelines.resources.notifier import PagerDutySlackNotifier
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.stripe_server import ERROR_AFTER_CHARGE, FakeStripe
from tests.fakes.webhook_receiver import WebhookReceiver, running_webhook_receiver
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import HMAC_SECRET, Inbox, order_event
from tests.orders.test_ledger_isolation import (
    CursedCatalog,
    NulReferenceGateway,
    intake_dead_letters,
    signed,
)
from tests.orders.test_sealed_payloads import corrupt_stored_payload
from tests.orders.test_stripe_replays import statuses

ROUTING_KEY = "orders-routing-key"
Alerts = list[tuple[str, str]]


@pytest.fixture
def pagerduty() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver() as receiver:
        yield receiver


def pager_at(receiver: WebhookReceiver) -> PagerDutySlackNotifier:
    return PagerDutySlackNotifier(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=receiver.url)


def pages(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """The PagerDuty events it accepted, in order."""
    return [json.loads(request.body) for request in receiver.accepted()]


def hide_the_next_charge(fake_stripe: FakeStripe) -> None:
    """Stripe charges, then saves a 500 for the key, and its search does not show the charge yet."""
    fake_stripe.pause_indexing()
    fake_stripe.fail_next(ERROR_AFTER_CHARGE)


def test_hidden_charge_outcome_pages_pagerduty_once_across_two_batches_under_its_dedup_key(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    pagerduty: WebhookReceiver,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    hide_the_next_charge(fake_stripe)
    alerts: Alerts = []

    for _ in range(2):
        # A processor per batch, as each run builds its own.
        make_processor(
            stripe_gateway, pager=pager_at(pagerduty), alert=lambda *alert: alerts.append(alert)
        ).process_batch()

    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN and fake_stripe.replays >= 2
    (page,) = pages(pagerduty)
    assert (page["routing_key"], page["event_action"]) == (ROUTING_KEY, "trigger")
    assert page["dedup_key"] == hidden_dedup_key(order_id)
    assert (
        page["payload"]["summary"].startswith(f"order {order_id}: ")
        and "Never charge" in page["payload"]["summary"]
    )
    assert (page["payload"]["group"], page["payload"]["source"]) == ("orders", "hub-pipelines/orders")
    ((subject, reason),) = alerts
    assert subject == order_id and reason.endswith(f"[paged, dedup key {hidden_dedup_key(order_id)}]")


def test_hidden_outcome_page_pagerduty_refused_is_sent_by_the_next_batch_that_finds_it_hidden(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    pagerduty: WebhookReceiver,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    hide_the_next_charge(fake_stripe)
    pagerduty.fail_next(503, 1)
    alerts: Alerts = []

    for _ in range(3):
        make_processor(
            stripe_gateway, pager=pager_at(pagerduty), alert=lambda *alert: alerts.append(alert)
        ).process_batch()

    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN
    assert [request.answered for request in pagerduty.received] == [503, 200]
    assert [page["dedup_key"] for page in pages(pagerduty)] == [hidden_dedup_key(order_id)]
    refused, paged = (reason for _, reason in alerts)
    assert refused.endswith(f"[NOT paged: the pager did not take {hidden_dedup_key(order_id)}]")
    assert paged.endswith(f"[paged, dedup key {hidden_dedup_key(order_id)}]")


def test_order_parked_after_repeated_errors_pages_once_under_its_dedup_key(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    pagerduty: WebhookReceiver,
) -> None:
    events = [order_event(customer=f"c-{n}") for n in range(3)]
    Inbox(ledger_database).land_events(events)
    alerts: Alerts = []
    processor = make_processor(
        NulReferenceGateway(stripe_gateway, "c-1"),
        pager=pager_at(pagerduty),
        alert=lambda *alert: alerts.append(alert),
    )

    reports = [processor.process_batch() for _ in range(4)]

    assert [report.reconciled for report in reports[1:]] == [{"retry": 1}, {"parked": 1}, {}]
    parked = order_id_for("c-1", events[1]["idempotency_key"])
    assert statuses(ledger_database)[parked] == RESERVED
    (page,) = pages(pagerduty)
    assert (page["event_action"], page["dedup_key"]) == ("trigger", f"order-parked/{parked}")
    assert page["payload"]["summary"].startswith(
        f"order {parked} parked: internal: UntranslatableCharacter after 3 attempts"
    )
    ((subject, reason),) = alerts
    assert subject == parked and reason.endswith(f"[paged, dedup key order-parked/{parked}]")


def test_parked_order_page_pagerduty_refused_is_sent_when_a_later_batch_parks_it_again(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    pagerduty: WebhookReceiver,
) -> None:
    Inbox(ledger_database).land_events([order_event(customer="c-1")])
    pagerduty.fail_next(503, 1)
    processor = make_processor(
        NulReferenceGateway(stripe_gateway, "c-1"), pager=pager_at(pagerduty), max_attempts=1
    )

    reports = [processor.process_batch() for _ in range(3)]

    assert reports[0].counts == {"retry": 1}
    assert [report.reconciled for report in reports[1:]] == [{"parked": 1}, {}]
    (order_id,) = statuses(ledger_database)
    assert [request.answered for request in pagerduty.received] == [503, 200]
    assert [page["dedup_key"] for page in pages(pagerduty)] == [f"order-parked/{order_id}"]
    assert len(fake_stripe.succeeded_intents(order_id)) == 1


def test_parked_event_page_pagerduty_refused_is_sent_when_a_later_batch_parks_it_again(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    pagerduty: WebhookReceiver,
) -> None:
    Catalog(ledger_database).upsert("p-cursed", "Cursed mug", "USD", 900, 10)
    (offset,) = Inbox(ledger_database).store(
        [signed(order_event(customer="c-cursed", items=[("p-cursed", 1, "9.00")]))]
    )
    pagerduty.fail_next(503, 1)
    alerts: Alerts = []
    processor = make_processor(
        stripe_gateway,
        catalog=CursedCatalog(ledger_database),
        max_attempts=1,
        pager=pager_at(pagerduty),
        alert=lambda *alert: alerts.append(alert),
    )

    refused = processor.process_batch()
    assert refused.counts == {"retry": 1} and offset not in intake_dead_letters(ledger_database)
    reports = [processor.process_batch() for _ in range(2)]

    assert [report.counts for report in reports] == [{"parked": 1}, {}]
    assert intake_dead_letters(ledger_database)[offset].startswith(
        "internal: ZeroDivisionError after 2 attempts"
    )
    key = f"event-parked/orders/0/{offset}"
    assert [request.answered for request in pagerduty.received] == [503, 200]
    assert [page["dedup_key"] for page in pages(pagerduty)] == [key]
    assert [reason.rsplit("[", 1)[1] for _, reason in alerts] == [
        f"NOT paged: the pager did not take {key}]",
        f"paged, dedup key {key}]",
    ]


def test_inbox_row_corrupted_at_rest_pages_once_under_its_position(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    pagerduty: WebhookReceiver,
) -> None:
    Inbox(ledger_database).land_events(order_event(customer=f"c-{n}") for n in range(2))
    corrupt_stored_payload(
        ledger_database, 0, 1, ("one bit flipped", "set_byte(payload, 20, get_byte(payload, 20) # 1)", {})
    )
    alerts: Alerts = []
    processor = make_processor(
        stripe_gateway, pager=pager_at(pagerduty), alert=lambda *alert: alerts.append(alert)
    )

    reports = [processor.process_batch() for _ in range(2)]

    assert [report.counts for report in reports] == [{"paid": 1, "rejected": 1}, {}]
    (page,) = pages(pagerduty)
    assert page["dedup_key"] == "inbox-row-corrupted/orders/0/1"
    assert page["payload"]["summary"].startswith(
        "orders partition 0 offset 1: the stored payload does not open"
    )
    ((subject, reason),) = alerts
    assert subject == "event orders partition 0 offset 1" and reason.endswith(
        "[paged, dedup key inbox-row-corrupted/orders/0/1]"
    )


def test_declined_payment_and_idempotency_conflict_page_nothing_but_log_their_alerts(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    pagerduty: WebhookReceiver,
) -> None:
    declined = order_event(customer="c-declined", payment_method="pm_card_chargeDeclined")
    first = order_event(customer="c-reuser", idempotency_key="checkout-42")
    reused = order_event(customer="c-reuser", idempotency_key="checkout-42", items=[("p-cup", 2, "12.50")])
    Inbox(ledger_database).land_events([declined, first, reused])
    alerts: Alerts = []

    report = make_processor(
        stripe_gateway, pager=pager_at(pagerduty), alert=lambda *alert: alerts.append(alert)
    ).process_batch()

    assert report.counts == {"failed": 1, "paid": 1, "rejected": 1}
    assert pagerduty.received == []
    declined_id = order_id_for("c-declined", declined["idempotency_key"])
    assert statuses(ledger_database)[declined_id] == FAILED
    by_subject = dict(alerts)
    assert by_subject.pop(declined_id).startswith("payment declined")
    ((conflict_subject, conflict),) = by_subject.items()
    assert conflict_subject.startswith("event orders partition 0 offset ")
    assert "idempotency key 'checkout-42' of customer 'c-reuser'" in conflict and "paged" not in conflict


def test_order_ledger_asset_pages_a_hidden_charge_outcome_and_logs_its_alert(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    pagerduty: WebhookReceiver,
) -> None:
    Inbox(ledger_database).land_events([order_event(items=[("p-cup", 1, "12.50")])])
    hide_the_next_charge(fake_stripe)
    resources = {
        "database": ledger_database,
        "cache": InProcessCache(),
        "payment_gateway": stripe_gateway,
        "pager": pager_at(pagerduty),
        "order_settings": OrderLedgerSettings(hmac_secret=HMAC_SECRET, pii_keys=new_key_setting()),
    }
    instance = dg.DagsterInstance.ephemeral()

    result = dg.materialize([ledger.order_ledger], resources=resources, instance=instance)

    assert result.success
    ((order_id, status),) = statuses(ledger_database).items()
    assert status == PAYMENT_UNKNOWN
    assert [page["dedup_key"] for page in pages(pagerduty)] == [hidden_dedup_key(order_id)]
    errors = [
        entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.ERROR
    ]
    (alert,) = [message for message in errors if message.startswith("ALERT ")]
    assert alert.startswith(f"ALERT {order_id}: ") and alert.endswith(
        f"[paged, dedup key {hidden_dedup_key(order_id)}]"
    )
