"""Order confirmations through a real SMTP server (aiosmtpd) and the Twilio-style SMS stub."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from hub_pipelines.orders.notifications import send_confirmations
from hub_pipelines.orders.pii import PiiCipher
from hub_pipelines.orders.tables import notification_log
from hub_pipelines.resources.customer_notifications import CustomerNotifier
from hub_pipelines.resources.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.sms_server import FakeSms
from tests.orders.conftest import LedgerFactory
from tests.orders.support import Inbox, order_event
from tests.services import free_port


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, Mailbox]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, mailbox
    controller.stop()


@pytest.fixture
def sms_server() -> Iterator[FakeSms]:
    server = FakeSms().start()
    yield server
    server.stop()


def notifier(smtp_port: int, sms: FakeSms) -> CustomerNotifier:
    return CustomerNotifier(
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_starttls=False,
        email_from="orders@hub.test",
        sms_base_url=sms.base_url,
        sms_account_sid=sms.account_sid,
        sms_auth_token=sms.auth_token,
        sms_from="+15550009999",
    )


def test_confirmation_email_and_sms_arrive_once_per_paid_order(
    ledger_database: PostgresDatabase,
    make_ledger: LedgerFactory,
    cipher: PiiCipher,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> None:
    controller, mailbox = smtp_server
    Inbox(ledger_database).land_events([order_event(customer="ada")])
    make_ledger(ApprovingLocalGateway()).process_batch()
    channels = notifier(controller.port, sms_server).channels()

    first = send_confirmations(ledger_database, channels, cipher)
    second = send_confirmations(ledger_database, channels, cipher)

    assert first == {"email_sent": 1, "sms_sent": 1}
    assert second == {}
    assert [message["To"] for message in mailbox.messages] == ["ada@example.com"]
    assert "is confirmed" in mailbox.messages[0]["Subject"]
    assert [message["To"] for message in sms_server.messages] == ["+15550000001"]


def test_refused_sms_is_retried_by_a_later_run_and_never_fails_the_order(
    ledger_database: PostgresDatabase,
    make_ledger: LedgerFactory,
    cipher: PiiCipher,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> None:
    controller, _ = smtp_server
    Inbox(ledger_database).land_events([order_event(customer="bob")])
    make_ledger(ApprovingLocalGateway()).process_batch()
    channels = notifier(controller.port, sms_server).channels()
    sms_server.fail_next(400)

    first = send_confirmations(ledger_database, channels, cipher)
    second = send_confirmations(ledger_database, channels, cipher)

    assert first == {"email_sent": 1, "sms_failed": 1}
    assert second == {"sms_sent": 1}
    assert len(sms_server.messages) == 1
    with ledger_database.transaction() as connection:
        log = connection.execute(
            sa.select(notification_log.c.channel, notification_log.c.status, notification_log.c.attempts)
        ).all()
    assert sorted(log) == [("email", "sent", 1), ("sms", "sent", 2)]
