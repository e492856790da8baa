"""Raw order events sealed at rest: round trips, tampering and row swaps fail, stored bytes hold no PII."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.orders.dead_letters import DeadLetter, read_dead_letters
from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed, PiiKeyError, new_key_setting
from hub_pipelines.orders.reservation import DEAD_LETTER_SOURCE
from hub_pipelines.orders.sealed_payloads import (
    open_dead_letter_payload,
    open_inbox_payload,
    payload_keyring,
    seal_dead_letter_payload,
    seal_inbox_payload,
)
from hub_pipelines.orders.tables import order_intake
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.pii_canaries import Canary, stored_payloads
from tests.orders.support import TOPIC, Inbox, encode, hmac_headers, order_event

KEYRING = PiiCipher.from_setting(new_key_setting("k2") + "," + new_key_setting("k1"))


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=2000), partition=st.integers(0, 64), offset=st.integers(0, 2**62))
def test_sealed_inbox_payload_opens_to_the_same_bytes(payload: bytes, partition: int, offset: int) -> None:
    sealed = seal_inbox_payload("orders", partition, offset, payload, KEYRING)

    assert sealed["payload_key_id"] == "k2"
    assert open_inbox_payload("orders", partition, offset, sealed["payload"], "k2", KEYRING) == payload  # type: ignore[arg-type]


def test_tampered_inbox_payload_does_not_open() -> None:
    sealed = bytearray(seal_inbox_payload("orders", 0, 7, b'{"email": "a@b.c"}', KEYRING)["payload"])  # type: ignore[arg-type]
    sealed[20] ^= 0x01

    with pytest.raises(PiiDecryptionFailed, match="topic_inbox:orders:0:7"):
        open_inbox_payload("orders", 0, 7, bytes(sealed), "k2", KEYRING)


def test_inbox_payload_moved_to_another_row_does_not_open() -> None:
    sealed = seal_inbox_payload("orders", 0, 7, b"event", KEYRING)["payload"]

    for topic, partition, offset in [("orders", 0, 8), ("orders", 1, 7), ("other", 0, 7)]:
        with pytest.raises(PiiDecryptionFailed):
            open_inbox_payload(topic, partition, offset, sealed, "k2", KEYRING)  # type: ignore[arg-type]


def test_dead_letter_payload_is_bound_to_its_source_and_position() -> None:
    sealed = seal_dead_letter_payload("orders-intake", "orders", 2, 41, "e-1", b"event", KEYRING)
    blob = sealed["payload"]

    assert open_dead_letter_payload("orders-intake", "orders", 2, 41, "e-1", blob, "k2", KEYRING) == b"event"  # type: ignore[arg-type]
    with pytest.raises(PiiDecryptionFailed):
        open_dead_letter_payload("orders-landing", "orders", 2, 41, "e-1", blob, "k2", KEYRING)  # type: ignore[arg-type]
    with pytest.raises(PiiDecryptionFailed):
        open_dead_letter_payload("orders-intake", "orders", 2, 42, "e-1", blob, "k2", KEYRING)  # type: ignore[arg-type]


def test_payload_sealed_under_a_retired_key_needs_that_key_to_open() -> None:
    old = PiiCipher.from_setting(new_key_setting("k0"))
    sealed = seal_inbox_payload("orders", 0, 1, b"event", old)["payload"]

    with pytest.raises(PiiKeyError, match="'k0'"):
        open_inbox_payload("orders", 0, 1, sealed, "k0", KEYRING)  # type: ignore[arg-type]


def test_inbox_and_dead_letters_store_no_plaintext_email_or_phone_in_postgresql(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    canary = Canary.new()
    accepted = encode(canary.order_event("c-1"))
    unknown_product = encode(canary.order_event("c-2", items=[("p-nope", 1, "1.00")]))
    undecodable = f'{{"customer": {{"email": "{canary.email}", "phone": "{canary.phone}"'.encode()
    assert all(canary.hits(payload) for payload in (accepted, unknown_product, undecodable))
    inbox = Inbox(ledger_database)
    inbox.land([(payload, hmac_headers(payload)) for payload in (accepted, unknown_product, undecodable)])

    report = make_processor(stripe_gateway).process_batch()

    assert report.count("paid") == 1 and report.count("rejected") == 1
    rows = stored_payloads(ledger_database)
    assert {table for table, _ in rows} == {"topic_inbox", "dead_letters"}
    assert len(rows) == 4
    for table, stored in rows:
        assert canary.hits(stored) == [], table


Corruption = tuple[str, str, dict[str, int]]
"""A way to damage a stored inbox payload: a name, SQL over `payload`, and its parameters."""

CORRUPTIONS = st.one_of(
    st.integers(0, 11).map(lambda n: ("cut inside the nonce", "substring(payload from 1 for :n)", {"n": n})),
    st.integers(12, 40).map(lambda n: ("cut after the nonce", "substring(payload from 1 for :n)", {"n": n})),
    st.integers(0, 40).map(
        lambda i: ("one bit flipped", "set_byte(payload, :i, get_byte(payload, :i) # 1)", {"i": i})
    ),
    st.integers(1, 64).map(
        lambda n: ("bytes appended", "payload || decode(repeat('00', :n), 'hex')", {"n": n})
    ),
    st.just(("emptied", "''::bytea", {})),
)


def corrupt_stored_payload(
    database: PostgresDatabase, partition: int, offset: int, corruption: Corruption
) -> bytes:
    """Damage one inbox row's stored bytes in PostgreSQL, as a bad disk or a bad hand would; returns them."""
    _, expression, parameters = corruption
    with database.transaction() as connection:
        return bytes(
            connection.execute(
                sa.text(
                    f"UPDATE topic_inbox SET payload = {expression} "
                    'WHERE topic = :topic AND "partition" = :partition AND "offset" = :offset RETURNING payload'
                ),
                {**parameters, "topic": TOPIC, "partition": partition, "offset": offset},
            ).scalar_one()
        )


def intake_dead_letter(database: PostgresDatabase, partition: int, offset: int) -> DeadLetter:
    with database.transaction() as connection:
        (letter_id,) = connection.execute(
            sa.select(dead_letters.c.id).where(
                dead_letters.c.source == DEAD_LETTER_SOURCE,
                dead_letters.c.partition == partition,
                dead_letters.c.offset == offset,
            )
        ).one()
    (letter,) = read_dead_letters(database, [letter_id])
    return letter


EXAMPLE_PARTITIONS = itertools.count(100)
"""Each example's own partition: hypothesis runs every example on the test's one database."""


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corruption=CORRUPTIONS)
def test_inbox_row_corrupted_at_rest_is_dead_lettered_with_its_position_and_sealed_bytes_and_the_batch_goes_on(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    corruption: Corruption,
) -> None:
    inbox = Inbox(ledger_database, partition=next(EXAMPLE_PARTITIONS))
    events = [order_event(customer=f"c-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    inbox.land_events(events)
    corrupted_offset = 1
    key_id = payload_keyring().active_key_id
    stored = corrupt_stored_payload(ledger_database, inbox.partition, corrupted_offset, corruption)
    alerts: list[tuple[str, str]] = []
    ledger = make_processor(stripe_gateway, alert=lambda *alert: alerts.append(alert))

    report = ledger.process_batch()

    assert report.counts == {"paid": 2, "rejected": 1}, report.outcomes
    where = f"{TOPIC} partition {inbox.partition} offset {corrupted_offset}"
    letter = intake_dead_letter(ledger_database, inbox.partition, corrupted_offset)
    assert letter.reason.startswith(f"{where}: the stored payload does not open with key {key_id!r}"), letter
    assert letter.payload == stored
    assert alerts == [(f"event {where}", letter.reason)]
    with ledger_database.transaction() as connection:
        kept = connection.execute(
            sa.select(topic_inbox.c.payload).where(
                topic_inbox.c.partition == inbox.partition, topic_inbox.c.offset == corrupted_offset
            )
        ).scalar_one()
    assert bytes(kept) == stored
    assert ledger.process_batch().counts == {}


def test_inbox_row_whose_stored_headers_are_not_text_is_dead_lettered_and_the_batch_goes_on(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    inbox = Inbox(ledger_database)
    inbox.land_events(order_event(customer=f"c-{n}") for n in range(3))
    with ledger_database.transaction() as connection:
        for offset, headers in [(0, {"x-signature": 7}), (1, [1, 2])]:
            connection.execute(
                sa.text('UPDATE topic_inbox SET headers = CAST(:headers AS jsonb) WHERE "offset" = :offset'),
                {"headers": json.dumps(headers), "offset": offset},
            )

    report = make_processor(stripe_gateway).process_batch()

    assert report.counts == {"paid": 1, "rejected": 2}, report.outcomes
    for offset in (0, 1):
        assert intake_dead_letter(ledger_database, 0, offset).reason == (
            f"{TOPIC} partition 0 offset {offset}: the stored headers are not a map of text to text"
        )


def test_inbox_row_under_a_key_id_the_keyring_lacks_stops_the_batch_naming_the_key_and_the_row(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    inbox = Inbox(ledger_database)
    inbox.land_events(order_event(customer=f"c-{n}") for n in range(3))
    with ledger_database.transaction() as connection:
        connection.execute(
            sa.text("""UPDATE topic_inbox SET payload_key_id = 'k-retired' WHERE "offset" = 1""")
        )

    with pytest.raises(PiiKeyError, match=r"no PII key 'k-retired' is configured; .* topic_inbox:orders:0:1"):
        make_processor(stripe_gateway).process_batch()

    with ledger_database.transaction() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(dead_letters)).scalar_one() == 0
        assert connection.execute(sa.select(sa.func.count()).select_from(order_intake)).scalar_one() == 0


def test_key_listed_with_other_bytes_than_the_ones_that_sealed_stops_the_batch_instead_of_dead_lettering_it(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_PII_KEYS", new_key_setting("k7"))
    Inbox(ledger_database).land_events(order_event(customer=f"c-{n}") for n in range(3))
    monkeypatch.setenv("HUB_PII_KEYS", new_key_setting("k7"))

    with pytest.raises(
        PiiKeyError,
        match=r"PII key 'k7' opens none of the 3 inbox rows sealed under it in this batch "
        r"\(the first: orders partition 0 offset 0\): its bytes in HUB_PII_KEYS are not the ones",
    ):
        make_processor(stripe_gateway).process_batch()

    with ledger_database.transaction() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(dead_letters)).scalar_one() == 0
        assert connection.execute(sa.select(sa.func.count()).select_from(order_intake)).scalar_one() == 0
