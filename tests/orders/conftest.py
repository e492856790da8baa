"""Fixtures of the order tests: a migrated PostgreSQL database, the fake Stripe server, a ledger factory."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from hub_pipelines.core.ports import PaymentGateway
from hub_pipelines.core.schema import upgrade_schema
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.pii import PiiCipher, new_key_setting
from hub_pipelines.orders.processing import OrderBatchProcessor
from hub_pipelines.resources.orders.customer_notifications import CustomerNotifier
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.sms_server import FakeSms
from tests.fakes.stripe_server import FakeStripe, Faults
from tests.orders.support import authenticator, seed_catalog
from tests.services import free_port
from tests.services.postgres import PostgresServer


def postgres_resource(server: PostgresServer, **settings: Any) -> PostgresDatabase:
    return PostgresDatabase(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=server.database,
        **settings,
    )


@pytest.fixture
def ledger_database(postgres_database: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh PostgreSQL database at the newest schema."""
    database = postgres_resource(postgres_database, pool_size=12, max_overflow=8)
    upgrade_schema(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe(Faults(stall_s=1.0)).start()
    yield server
    server.stop()


@pytest.fixture
def stripe_gateway(fake_stripe: FakeStripe) -> StripeGateway:
    """The real Stripe gateway on the fake server: no backoff waits, a breaker of its own per test."""
    return StripeGateway(
        api_key="sk_test_hub",
        api_base=fake_stripe.base_url,
        call_timeout_s=0.5,
        initial_backoff_s=0.0,
        backoff_jitter_s=0.0,
        breaker_name=f"stripe-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def cipher() -> PiiCipher:
    return PiiCipher.from_setting(new_key_setting("k1"))


ProcessorFactory = Callable[..., OrderBatchProcessor]


@pytest.fixture
def make_processor(ledger_database: PostgresDatabase, cipher: PiiCipher) -> ProcessorFactory:
    """An OrderBatchProcessor on the test database with the seeded catalog; keyword arguments override parts."""
    seed_catalog(Catalog(ledger_database))

    def build(gateway: PaymentGateway, **overrides: Any) -> OrderBatchProcessor:
        settings: dict[str, Any] = {
            "database": ledger_database,
            "catalog": Catalog(ledger_database),
            "gateway": gateway,
            "authenticator": authenticator(),
            "cipher": cipher,
            "max_in_flight": 4,
            "stale_after_s": 0.0,
        }
        settings.update(overrides)
        return OrderBatchProcessor(**settings)

    return build


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
