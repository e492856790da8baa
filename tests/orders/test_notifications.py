"""Order confirmations through a real SMTP server (aiosmtpd) and the Twilio-style SMS stub."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from hub_pipelines.core.ports import NotificationChannel
from hub_pipelines.orders.notifications import send_confirmations
from hub_pipelines.orders.pii import PiiCipher
from hub_pipelines.orders.tables import notification_log
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.sms_server import FakeSms
from tests.orders.conftest import Mailbox, ProcessorFactory, notifier
from tests.orders.support import Inbox, order_event


@dataclass
class Shop:
    """Paid orders in the ledger, the channels that confirm them, and what reached each channel."""

    database: PostgresDatabase
    pay: Callable[[list[str]], None]
    channels: Mapping[str, NotificationChannel]
    mailbox: Mailbox
    sms: FakeSms
    cipher: PiiCipher

    def confirm(self, **options: int) -> dict[str, int]:
        return send_confirmations(self.database, self.channels, self.cipher, **options)


@pytest.fixture
def shop(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    cipher: PiiCipher,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> Shop:
    controller, mailbox = smtp_server

    def pay(customers: list[str]) -> None:
        Inbox(ledger_database).land_events([order_event(customer=name) for name in customers])
        make_processor(ApprovingLocalGateway()).process_batch()

    channels = notifier(controller.port, sms_server).channels()
    return Shop(ledger_database, pay, channels, mailbox, sms_server, cipher)


def test_confirmation_email_and_sms_arrive_once_per_paid_order(shop: Shop) -> None:
    shop.pay(["ada"])

    first = shop.confirm()
    second = shop.confirm()

    assert first == {"email_sent": 1, "sms_sent": 1}
    assert second == {}
    assert [message["To"] for message in shop.mailbox.messages] == ["ada@example.com"]
    assert "is confirmed" in shop.mailbox.messages[0]["Subject"]
    assert [message["To"] for message in shop.sms.messages] == ["+15550000001"]


def test_refused_sms_is_retried_by_a_later_run_and_never_fails_the_order(shop: Shop) -> None:
    shop.pay(["bob"])
    shop.sms.fail_next(400)

    first = shop.confirm()
    second = shop.confirm()

    assert first == {"email_sent": 1, "sms_failed": 1}
    assert second == {"sms_sent": 1}
    assert len(shop.sms.messages) == 1
    with shop.database.transaction() as connection:
        log = connection.execute(
            sa.select(notification_log.c.channel, notification_log.c.status, notification_log.c.attempts)
        ).all()
    assert sorted(log) == [("email", "sent", 1), ("sms", "sent", 2)]


def test_a_backlog_past_one_page_is_confirmed_whole_by_one_call(shop: Shop) -> None:
    customers = [f"c{n}" for n in range(7)]
    shop.pay(customers)

    first = shop.confirm(limit=3)
    second = shop.confirm(limit=3)

    assert first == {"email_sent": 7, "sms_sent": 7}
    assert second == {}
    assert sorted(message["To"] for message in shop.mailbox.messages) == sorted(
        f"{n}@example.com" for n in customers
    )
    assert len(shop.sms.messages) == 7
