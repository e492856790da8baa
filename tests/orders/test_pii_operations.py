"""Operator commands on sealed order events: dead-letter inspection and replay, key rotation, retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines.cli import main
from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.pii import PiiCipher, new_key_setting, pii_context
from hub_pipelines.orders.retention import purge_expired
from hub_pipelines.orders.sealed_payloads import open_dead_letter_payload, open_inbox_payload
from hub_pipelines.orders.tables import PAID, order_intake, orders
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.pii_canaries import Canary
from tests.orders.support import Inbox, encode, hmac_headers
from tests.services.postgres import PostgresServer


@pytest.fixture
def prod_cli(postgres_database: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """`hub-pipelines` pointed at the test database as in production; returns the key setting."""
    keys = new_key_setting("k1")
    monkeypatch.setenv("HUB_ENV", "prod")
    monkeypatch.setenv("HUB_DATABASE_URL", postgres_database.url)
    monkeypatch.setenv("HUB_PII_KEYS", keys)
    return keys


def _dead_letter_ids(database: PostgresDatabase, source: str) -> list[int]:
    with database.transaction() as connection:
        return list(
            connection.execute(
                sa.select(dead_letters.c.id)
                .where(dead_letters.c.source == source)
                .order_by(dead_letters.c.id)
            ).scalars()
        )


def test_dead_letters_show_prints_the_decrypted_event_and_replay_places_it_after_the_fix(
    prod_cli: str,
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = ledger_database
    canary = Canary.new()
    event = canary.order_event("c-1", items=[("p-new", 1, "3.00")])
    payload = encode(event)
    Inbox(database).land([(payload, hmac_headers(payload))])
    ledger = make_processor(stripe_gateway)
    assert ledger.process_batch().count("rejected") == 1
    [letter_id] = _dead_letter_ids(database, "orders-intake")

    assert main(["dead-letters", "show", str(letter_id)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["payload"].encode() == payload
    assert "unknown product 'p-new'" in shown["reason"]

    Catalog(database).upsert("p-new", "New product", "USD", 300, 10)
    assert main(["dead-letters", "replay", str(letter_id)]) == 0
    report = ledger.process_batch()

    assert report.count("paid") == 1
    assert _dead_letter_ids(database, "orders-intake") == []
    with database.transaction() as connection:
        assert connection.execute(sa.select(orders.c.status)).scalars().all() == [PAID]


def test_dead_letters_show_lists_a_dead_letter_corrupted_at_rest_without_its_payload_and_the_others_in_full(
    prod_cli: str, postgres_database: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    database = PostgresDatabase(url=postgres_database.url, migrate_schema=True)
    Inbox(database).land([(b'{"customer": 1', {}), (b'{"customer": 2', {})])
    first, second = _dead_letter_ids(database, "orders-landing")
    with database.transaction() as connection:
        connection.execute(
            sa.update(dead_letters).where(dead_letters.c.id == first).values(payload=b"\x00" * 5)
        )

    assert main(["dead-letters", "show"]) == 0

    shown = {letter["id"]: letter for letter in map(json.loads, capsys.readouterr().out.splitlines())}
    assert shown[second]["payload"] == '{"customer": 2' and "payload_error" not in shown[second]
    assert shown[first]["payload"] is None
    assert shown[first]["payload_error"].startswith("the stored payload does not open (corrupted at rest): ")


def test_an_event_the_landing_could_not_decode_is_refused_for_replay(
    prod_cli: str, postgres_database: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    database = PostgresDatabase(url=postgres_database.url, migrate_schema=True)
    Inbox(database).land([(b'{"customer": ', {})])
    [letter_id] = _dead_letter_ids(database, "orders-landing")

    assert main(["dead-letters", "replay", str(letter_id)]) == 1

    assert "has no event id" in capsys.readouterr().err
    assert _dead_letter_ids(database, "orders-landing") == [letter_id]


def test_rotate_keys_reseals_every_row_under_the_newest_key_and_a_second_run_finds_nothing(
    prod_cli: str,
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = ledger_database
    old = PiiCipher.from_setting(prod_cli)
    events = [Canary.new().order_event(f"c-{i}") for i in range(5)]
    events.append(Canary.new().order_event("c-9", items=[("p-nope", 1, "1.00")]))
    payloads = [encode(event) for event in events]
    inbox = Inbox(database)
    inbox.land([(payload, hmac_headers(payload)) for payload in payloads] + [(b"not json", {})])
    ledger = make_processor(stripe_gateway, cipher=old)
    assert ledger.process_batch().count("paid") == 5
    with database.transaction() as connection:
        connection.execute(  # a row landed before payloads were sealed
            sa.insert(topic_inbox).values(
                topic="orders", partition=9, offset=0, event_id="legacy", payload=b"{}"
            )
        )
    newest = new_key_setting("k2")
    monkeypatch.setenv("HUB_PII_KEYS", f"{newest},{prod_cli}")

    assert main(["rotate-keys", "--batch-size", "2"]) == 0
    assert "re-sealed 7 inbox rows, 2 dead letters, 5 orders" in capsys.readouterr().out
    assert main(["rotate-keys"]) == 0
    assert "re-sealed 0 inbox rows, 0 dead letters, 0 orders" in capsys.readouterr().out

    only_newest = PiiCipher.from_setting(newest)
    with database.transaction() as connection:
        inbox_rows = connection.execute(sa.select(topic_inbox)).mappings().all()
        letters = connection.execute(sa.select(dead_letters)).mappings().all()
        order_rows = connection.execute(sa.select(orders)).mappings().all()
    opened = {
        open_inbox_payload(
            r["topic"], r["partition"], r["offset"], r["payload"], r["payload_key_id"], only_newest
        )
        for r in inbox_rows
    }
    assert {row["payload_key_id"] for row in [*inbox_rows, *letters]} == {"k2"}
    assert opened == {*payloads, b"{}"}
    for r in letters:
        assert open_dead_letter_payload(
            r["source"],
            r["topic"],
            r["partition"],
            r["offset"],
            r["event_id"],
            r["payload"],
            "k2",
            only_newest,
        ) in {payloads[-1], b"not json"}
    assert {row["pii_key_id"] for row in order_rows} == {"k2"}
    emails = {
        only_newest.decrypt(r["email_ciphertext"], "k2", pii_context(r["order_id"], "email"))
        for r in order_rows
    }
    assert emails == {event["customer"]["email"] for event in events[:5]}


def test_rotate_keys_leaves_rows_corrupted_at_rest_under_their_key_naming_them_and_reseals_the_rest(
    prod_cli: str,
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = ledger_database
    old = PiiCipher.from_setting(prod_cli)
    payloads = [encode(Canary.new().order_event(f"c-{i}")) for i in range(4)]
    Inbox(database).land([(payload, hmac_headers(payload)) for payload in payloads] + [(b"not json", {})])
    assert make_processor(stripe_gateway, cipher=old).process_batch().count("paid") == 4
    garble = "set_byte({0}, 20, get_byte({0}, 20) # 1)"
    with database.transaction() as connection:
        connection.execute(
            sa.text(f'UPDATE topic_inbox SET payload = {garble.format("payload")} WHERE "offset" = 1')
        )
        connection.execute(sa.text(f"UPDATE dead_letters SET payload = {garble.format('payload')}"))
        corrupted_order = connection.execute(
            sa.text(
                f"UPDATE orders SET email_ciphertext = {garble.format('email_ciphertext')} "
                "WHERE order_id = (SELECT min(order_id) FROM orders) RETURNING order_id"
            )
        ).scalar_one()
    monkeypatch.setenv("HUB_PII_KEYS", f"{new_key_setting('k2')},{prod_cli}")

    assert main(["rotate-keys", "--batch-size", "1"]) == 1
    out, err = capsys.readouterr()
    assert "re-sealed 3 inbox rows, 0 dead letters, 3 orders" in out
    unreadable = [
        "topic_inbox:orders:0:1",
        "dead_letters:orders-landing:orders:0:4",
        f"order:{corrupted_order}",
    ]
    assert "3 rows do not open under their key and keep it" in err and all(row in err for row in unreadable)
    assert main(["rotate-keys", "--batch-size", "1"]) == 1
    out, err = capsys.readouterr()
    assert "re-sealed 0 inbox rows, 0 dead letters, 0 orders" in out and all(row in err for row in unreadable)
    with database.transaction() as connection:
        kept = (
            connection.execute(
                sa.text(
                    'SELECT payload_key_id FROM topic_inbox WHERE "offset" = 1 UNION ALL '
                    "SELECT payload_key_id FROM dead_letters UNION ALL "
                    "SELECT pii_key_id FROM orders WHERE order_id = :order_id"
                ),
                {"order_id": corrupted_order},
            )
            .scalars()
            .all()
        )
        others = (
            connection.execute(
                sa.text(
                    'SELECT DISTINCT payload_key_id FROM topic_inbox WHERE "offset" <> 1 UNION '
                    "SELECT DISTINCT pii_key_id FROM orders WHERE order_id <> :order_id"
                ),
                {"order_id": corrupted_order},
            )
            .scalars()
            .all()
        )
    assert kept == ["k1", "k1", "k1"] and others == ["k2"]


def test_retention_purges_processed_inbox_rows_and_old_dead_letters_only_once_expired(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    events = [Canary.new().order_event("c-1"), Canary.new().order_event("c-2", items=[("p-nope", 1, "1.00")])]
    payloads = [encode(event) for event in events]
    inbox = Inbox(ledger_database)
    inbox.land([(payload, hmac_headers(payload)) for payload in payloads])
    make_processor(stripe_gateway).process_batch()
    inbox.land([(encode(Canary.new().order_event("c-3")), {})])  # landed, not processed yet
    week, month = timedelta(days=7), timedelta(days=30)
    now = datetime.now(UTC)

    def remaining() -> tuple[int, int]:
        with ledger_database.transaction() as connection:
            return (
                connection.execute(sa.select(sa.func.count()).select_from(topic_inbox)).scalar_one(),
                connection.execute(sa.select(sa.func.count()).select_from(dead_letters)).scalar_one(),
            )

    assert purge_expired(ledger_database, now + timedelta(days=6), week, month).inbox_rows == 0
    after_a_week = purge_expired(ledger_database, now + timedelta(days=8), week, month)
    assert (after_a_week.inbox_rows, after_a_week.dead_letters) == (1, 0)
    assert remaining() == (2, 1)  # the unprocessed row and the rejected one its dead letter can replay
    after_a_month = purge_expired(ledger_database, now + timedelta(days=31), week, month, batch_size=1)
    assert (after_a_month.inbox_rows, after_a_month.dead_letters) == (1, 1)
    assert remaining() == (1, 0)
    with ledger_database.transaction() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(order_intake)).scalar_one() == 2


def test_the_code_location_schedules_the_retention_purge_daily() -> None:
    from hub_pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("order_events_retention_job_schedule")

    assert schedule.job_name == "order_events_retention_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "17 3 * * *"
