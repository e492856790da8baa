"""Key rotation: every sealed row re-sealed under the keyring's active (first) key, in batches.

Rotate by prepending a new key to HUB_PII_KEYS everywhere, then running `rotate_keys`: it re-seals
the inbox and dead-letter payloads and the orders' e-mail and phone ciphertexts still under an older
key (and seals the order payloads written in plaintext before sealing existed). Each batch is one
short transaction whose updates only apply while the row still holds what was read, so it can run
beside the pipelines, be killed anywhere and run again; a second run finds nothing to do. When it
reports nothing left, the old key can be removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.pii import PiiCipher, pii_context
from hub_pipelines.orders.sealed_payloads import (
    PII_DEAD_LETTER_SOURCES,
    dead_letter_context,
    inbox_context,
    payload_keyring,
)
from hub_pipelines.orders.tables import orders


@dataclass(frozen=True)
class RotationReport:
    inbox_rows: int
    dead_letters: int
    orders: int


def rotate_keys(
    database: SqlDatabase, keyring: PiiCipher | None = None, *, batch_size: int = 500
) -> RotationReport:
    """Re-seal every row not under the active key; returns how many rows of each table changed."""
    keyring = keyring or payload_keyring()
    return RotationReport(
        inbox_rows=_in_batches(database, batch_size, lambda c, n: _reseal_inbox(c, keyring, n)),
        dead_letters=_in_batches(database, batch_size, lambda c, n: _reseal_dead_letters(c, keyring, n)),
        orders=_in_batches(database, batch_size, lambda c, n: _reseal_orders(c, keyring, n)),
    )


def _in_batches(
    database: SqlDatabase, batch_size: int, batch: Callable[[sa.Connection, int], tuple[int, int]]
) -> int:
    changed = 0
    while True:
        with database.transaction() as connection:
            read, updated = batch(connection, batch_size)
        changed += updated
        if read < batch_size:
            return changed


def _open(keyring: PiiCipher, blob: Any, key_id: str | None, context: str) -> bytes:
    return bytes(blob) if key_id is None else keyring.open(bytes(blob), key_id, context)


def _reseal_inbox(connection: sa.Connection, keyring: PiiCipher, limit: int) -> tuple[int, int]:
    inbox = topic_inbox.c
    rows = connection.execute(
        sa.select(inbox.topic, inbox.partition, inbox.offset, inbox.payload, inbox.payload_key_id)
        .where(sa.or_(inbox.payload_key_id.is_(None), inbox.payload_key_id != keyring.active_key_id))
        .order_by(inbox.topic, inbox.partition, inbox.offset)
        .limit(limit)
    ).all()
    updated = 0
    for topic, partition, offset, payload, key_id in rows:
        context = inbox_context(topic, partition, offset)
        updated += connection.execute(
            sa.update(topic_inbox)
            .where(
                inbox.topic == topic,
                inbox.partition == partition,
                inbox.offset == offset,
                inbox.payload_key_id.is_not_distinct_from(key_id),
            )
            .values(
                payload=keyring.seal(_open(keyring, payload, key_id, context), context),
                payload_key_id=keyring.active_key_id,
            )
        ).rowcount
    return len(rows), updated


def _reseal_dead_letters(connection: sa.Connection, keyring: PiiCipher, limit: int) -> tuple[int, int]:
    letters = dead_letters.c
    rows = connection.execute(
        sa.select(
            letters.id,
            letters.source,
            letters.topic,
            letters.partition,
            letters.offset,
            letters.event_id,
            letters.payload,
            letters.payload_key_id,
        )
        .where(
            letters.payload.is_not(None),
            sa.or_(
                letters.payload_key_id != keyring.active_key_id,
                sa.and_(
                    letters.payload_key_id.is_(None), letters.source.in_(sorted(PII_DEAD_LETTER_SOURCES))
                ),
            ),
        )
        .order_by(letters.id)
        .limit(limit)
    ).all()
    updated = 0
    for letter_id, source, topic, partition, offset, event_id, payload, key_id in rows:
        context = dead_letter_context(source, topic, partition, offset, event_id)
        updated += connection.execute(
            sa.update(dead_letters)
            .where(letters.id == letter_id, letters.payload_key_id.is_not_distinct_from(key_id))
            .values(
                payload=keyring.seal(_open(keyring, payload, key_id, context), context),
                payload_key_id=keyring.active_key_id,
            )
        ).rowcount
    return len(rows), updated


def _reseal_orders(connection: sa.Connection, keyring: PiiCipher, limit: int) -> tuple[int, int]:
    columns = orders.c
    rows = connection.execute(
        sa.select(columns.order_id, columns.email_ciphertext, columns.phone_ciphertext, columns.pii_key_id)
        .where(columns.pii_key_id.is_not(None), columns.pii_key_id != keyring.active_key_id)
        .order_by(columns.order_id)
        .limit(limit)
    ).all()
    updated = 0
    for order_id, email, phone, key_id in rows:
        resealed = {
            column: None
            if blob is None
            else keyring.seal(
                keyring.open(bytes(blob), key_id, pii_context(order_id, field)), pii_context(order_id, field)
            )
            for column, field, blob in (
                ("email_ciphertext", "email", email),
                ("phone_ciphertext", "phone", phone),
            )
        }
        updated += connection.execute(
            sa.update(orders)
            .where(columns.order_id == order_id, columns.pii_key_id == key_id)
            .values(**resealed, pii_key_id=keyring.active_key_id)
        ).rowcount
    return len(rows), updated
