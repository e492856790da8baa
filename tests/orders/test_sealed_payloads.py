"""Raw order events sealed at rest: round trips, tampering and row swaps fail, stored bytes hold no PII."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed, PiiKeyError, new_key_setting
from hub_pipelines.orders.sealed_payloads import (
    open_dead_letter_payload,
    open_inbox_payload,
    seal_dead_letter_payload,
    seal_inbox_payload,
)
from hub_pipelines.resources.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.pii_canaries import Canary, stored_payloads
from tests.orders.support import Inbox, encode, hmac_headers

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
