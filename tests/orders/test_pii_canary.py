"""The canary test: orders with unique customer e-mails and phones go through the orders workflow in
Dagster (Kafka-protocol broker -> landing -> ledger on PostgreSQL -> Stripe fake -> outbox -> SMTP and SMS),
some of them dead-lettered; then no store holds the canaries in plaintext, and after the retention
period the scheduled purge leaves no processed inbox row."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient

from hub_pipelines import settings
from hub_pipelines.assets.orders import downstream, ledger, order_events
from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo.feeder import seed_demo_catalog
from hub_pipelines.housekeeping import order_events_retention_job
from hub_pipelines.orders.pii import new_key_setting
from hub_pipelines.orders.tables import PAID, orders
from hub_pipelines.resources.cache import RedisCache
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.notifier import LogNotifier
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.sms_server import FakeSms
from tests.fakes.stripe_server import FakeStripe
from tests.orders.conftest import notifier
from tests.orders.pii_canaries import Canary
from tests.orders.support import HMAC_SECRET, encode, hmac_headers
from tests.services.kafka import MOCK_CLUSTER_PARTITIONS, KafkaBroker
from tests.services.postgres import PostgresServer

PAID_ORDERS = 3


def _pg_dump(server: PostgresServer) -> bytes:
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    completed = subprocess.run(
        [pg_dump, "-h", server.host, "-p", str(server.port), "-U", server.user, server.database],
        env={**os.environ, "PGPASSWORD": server.password},
        capture_output=True,
        check=True,
    )
    return completed.stdout


def _every_topic_but(broker: KafkaBroker, input_topic: str) -> dict[str, bytes]:
    """Every message (key, headers, value) of every topic on the broker except the input."""
    topics = KafkaTopics(bootstrap_servers=broker.bootstrap_servers)
    names = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10).topics
    contents = {}
    for name in sorted(set(names) - {input_topic}):
        chunks = []
        for partition, end in topics.end_offsets(name).items():
            for message in topics.read_range(name, partition, 0, end):
                headers = b"".join(message.headers.values())
                chunks.append((message.key or b"") + headers + message.value)
        contents[name] = b"".join(chunks)
    return contents


def _application_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log record but the SMTP server's own (aiosmtpd's `mail.log`: the mailbox the
    confirmations are delivered to, on the customer's side of the wire)."""
    return "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if not record.name.startswith("mail.log")
    )


def _redis_contents(url: str) -> bytes:
    client = redis.Redis.from_url(url)
    return b"".join(key + (client.dump(key) or b"") for key in client.scan_iter(count=1000))


def test_canary_contact_details_are_nowhere_in_plaintext_and_the_inbox_is_purged_after_retention(
    postgres_database: PostgresServer,
    redis_server: str,
    kafka_broker: KafkaBroker,
    fake_stripe: FakeStripe,
    smtp_server: Any,
    sms_server: FakeSms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = new_key_setting("canary-k1")
    monkeypatch.setenv("HUB_PII_KEYS", keys)
    canaries = [Canary.new() for _ in range(PAID_ORDERS + 3)]
    paid = [
        encode(c.order_event(f"c-{i}", items=[("p-100", 1, "24.90")])) for i, c in enumerate(canaries[:3])
    ]
    unknown_product = encode(canaries[3].order_event("c-4", items=[("p-nope", 1, "1.00")]))
    forged = encode(canaries[4].order_event("c-5", items=[("p-100", 1, "24.90")]))
    undecodable = f'{{"customer": {{"email": "{canaries[5].email}", "phone": "{canaries[5].phone}"'.encode()
    messages = [OutgoingMessage(value=p, headers=hmac_headers(p), partition=0) for p in paid]
    messages += [
        OutgoingMessage(value=unknown_product, headers=hmac_headers(unknown_product), partition=1),
        OutgoingMessage(value=forged, headers=hmac_headers(forged, secret="not-the-secret"), partition=1),
        OutgoingMessage(value=undecodable, partition=2),
    ]
    kafka_broker.ensure_topic(settings.ORDERS_TOPIC, MOCK_CLUSTER_PARTITIONS)
    out_topic = f"order-events-canary-{tmp_path.name[-8:]}"
    kafka_broker.ensure_topic(out_topic, MOCK_CLUSTER_PARTITIONS)
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    topics.produce(settings.ORDERS_TOPIC, messages)
    database = PostgresDatabase(url=postgres_database.url, migrate_schema=True)
    seed_demo_catalog(database)
    controller, mailbox = smtp_server
    resources = {
        "database": database,
        "topics": topics,
        "cache": RedisCache(url=redis_server),
        "payment_gateway": StripeGateway(
            api_key="sk_test_hub", api_base=fake_stripe.base_url, initial_backoff_s=0, backoff_jitter_s=0
        ),
        "customer_notifier": notifier(controller.port, sms_server),
        "pager": LogNotifier(),
        "order_settings": OrderLedgerSettings(
            hmac_secret=HMAC_SECRET,
            pii_keys=keys,
            rate_limit_storage_uri=redis_server,
            order_events_topic=out_topic,
        ),
    }
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(dagster_home)) as instance:
        result = dg.materialize(
            [
                order_events.order_events,
                ledger.order_ledger,
                downstream.outbox_relay,
                downstream.order_notifications,
            ],
            resources=resources,
            instance=instance,
        )
        assert result.success

        with database.transaction() as connection:
            paid_orders = connection.execute(
                sa.select(sa.func.count()).where(orders.c.status == PAID)
            ).scalar_one()
            letters = connection.execute(sa.select(dead_letters.c.source)).scalars().all()
        assert paid_orders == PAID_ORDERS
        assert sorted(letters) == ["orders-intake", "orders-intake", "orders-landing"]
        # Delivered to the customers, the only place the contact details may go.
        delivered = b"".join(message.as_bytes() for message in mailbox.messages)
        assert all(canary.hits(delivered) for canary in canaries[:3])

        stores = {
            "pg_dump": _pg_dump(postgres_database),
            "redis": _redis_contents(redis_server),
            "logs": (_application_log(caplog) + "".join(capfd.readouterr())).encode(),
            **{
                f"topic {name}": contents
                for name, contents in _every_topic_but(kafka_broker, settings.ORDERS_TOPIC).items()
            },
        }
        assert canaries[0].hits(encode(canaries[0].order_event())), "the search finds a plaintext canary"
        # What is searched below: run and event storage, and the step's captured compute logs.
        assert (dagster_home / "history" / "runs.db").is_file()
        assert any(log.stat().st_size for log in dagster_home.rglob("compute_logs/*.err"))
        for canary in canaries:
            assert {name: canary.hits(data) for name, data in stores.items() if canary.hits(data)} == {}
            assert canary.files_with_hits(dagster_home) == []
            assert canary.files_with_hits(tmp_path) == []

        purge = order_events_retention_job.execute_in_process(
            resources={"database": database},
            instance=instance,
            run_config={
                "ops": {
                    "purge_expired_order_events": {
                        "config": {"as_of": (datetime.now(UTC) + timedelta(days=8)).isoformat()}
                    }
                }
            },
        )
    assert purge.success
    with database.transaction() as connection:
        left = connection.execute(sa.select(topic_inbox.c.event_id)).scalars().all()
        still_rejected = (
            connection.execute(
                sa.select(dead_letters.c.event_id).where(dead_letters.c.source == "orders-intake")
            )
            .scalars()
            .all()
        )
    # Only the rejected events stay, as long as their dead letters can still replay them.
    assert sorted(left) == sorted(still_rejected) and len(left) == 2
