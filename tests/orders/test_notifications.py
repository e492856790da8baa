"""Order confirmations through a real SMTP server (aiosmtpd) and the Twilio-style SMS stub."""

from __future__ import annotations

import sqlalchemy as sa
from aiosmtpd.controller import Controller

from hub_pipelines.orders.notifications import send_confirmations
from hub_pipelines.orders.pii import PiiCipher
from hub_pipelines.orders.tables import notification_log
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.sms_server import FakeSms
from tests.orders.conftest import Mailbox, ProcessorFactory, notifier
from tests.orders.support import Inbox, order_event


def test_confirmation_email_and_sms_arrive_once_per_paid_order(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    cipher: PiiCipher,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> None:
    controller, mailbox = smtp_server
    Inbox(ledger_database).land_events([order_event(customer="ada")])
    make_processor(ApprovingLocalGateway()).process_batch()
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
    make_processor: ProcessorFactory,
    cipher: PiiCipher,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> None:
    controller, _ = smtp_server
    Inbox(ledger_database).land_events([order_event(customer="bob")])
    make_processor(ApprovingLocalGateway()).process_batch()
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


def test_a_backlog_past_one_page_is_confirmed_whole_by_one_call(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    cipher: PiiCipher,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> None:
    controller, mailbox = smtp_server
    customers = [f"c{n}" for n in range(7)]
    Inbox(ledger_database).land_events([order_event(customer=name) for name in customers])
    make_processor(ApprovingLocalGateway()).process_batch()
    channels = notifier(controller.port, sms_server).channels()

    first = send_confirmations(ledger_database, channels, cipher, limit=3)
    second = send_confirmations(ledger_database, channels, cipher, limit=3)

    assert first == {"email_sent": 7, "sms_sent": 7}
    assert second == {}
    assert sorted(message["To"] for message in mailbox.messages) == sorted(
        f"{n}@example.com" for n in customers
    )
    assert len(sms_server.messages) == 7
