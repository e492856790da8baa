"""Key rotation: every sealed row re-sealed under the keyring's active (first) key, in batches.

Rotate by prepending a new key to HUB_PII_KEYS everywhere, then running `rotate_keys`: it re-seals
the inbox and dead-letter payloads and the orders' e-mail and phone ciphertexts still under an older
key (and seals the order payloads written in plaintext before sealing existed). Each batch is one
short transaction whose updates only apply while the row still holds what was read, so it can run
beside the pipelines, be killed anywhere and run again; a second run finds nothing to do. When it
reports nothing left, the old key can be removed.

A row that does not open under its key (garbled or truncated at rest) is left as it is and named in
the report: one bad row must not keep every other row under the old key. Until it is dealt with (the
ledger dead-letters a corrupted inbox row; the dead letter keeps the bytes), the old key stays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed, pii_context
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
    unreadable: tuple[str, ...] = ()
    """The rows left under their old key because they do not open with it, by their sealing context."""


Batch = Callable[[sa.Connection, int, Any], tuple[int, int, Any, list[str]]]
"""One batch of a table's re-sealing: (connection, limit, the last key read or None) -> rows read,
rows updated, the last key read, the rows that did not open."""


def rotate_keys(
    database: SqlDatabase, keyring: PiiCipher | None = None, *, batch_size: int = 500
) -> RotationReport:
    """Re-seal every row not under the active key; returns how many rows of each table changed."""
    keyring = keyring or payload_keyring()
    unreadable: list[str] = []
    return RotationReport(
        inbox_rows=_in_batches(database, batch_size, functools.partial(_reseal_inbox, keyring), unreadable),
        dead_letters=_in_batches(
            database, batch_size, functools.partial(_reseal_dead_letters, keyring), unreadable
        ),
        orders=_in_batches(database, batch_size, functools.partial(_reseal_orders, keyring), unreadable),
        unreadable=tuple(unreadable),
    )


def _in_batches(database: SqlDatabase, batch_size: int, batch: Batch, unreadable: list[str]) -> int:
    """Run `batch` from the table's first key on, each from the last key the previous one read, so
    rows left behind (unreadable) are never read twice."""
    changed = 0
    after = None
    while True:
        with database.transaction() as connection:
            read, updated, after, skipped = batch(connection, batch_size, after)
        changed += updated
        unreadable += skipped
        if read < batch_size:
            return changed


def _open(keyring: PiiCipher, blob: Any, key_id: str | None, context: str) -> bytes:
    return bytes(blob) if key_id is None else keyring.open(bytes(blob), key_id, context)


def _reseal_payloads(
    keyring: PiiCipher,
    connection: sa.Connection,
    table: sa.Table,
    rows: Iterable[tuple[sa.ColumnElement[bool], str, Any, str | None]],
) -> tuple[int, list[str]]:
    """Re-seal the `payload` of each (row's identity, sealing context, payload, key id) under the active
    key, only while the row still holds that key; returns the rows updated and the contexts that did not
    open."""
    updated, unreadable = 0, []
    for identity, context, payload, key_id in rows:
        try:
            opened = _open(keyring, payload, key_id, context)
        except PiiDecryptionFailed:
            unreadable.append(context)
            continue
        updated += connection.execute(
            sa.update(table)
            .where(identity, table.c.payload_key_id.is_not_distinct_from(key_id))
            .values(payload=keyring.seal(opened, context), payload_key_id=keyring.active_key_id)
        ).rowcount
    return updated, unreadable


def _reseal_inbox(
    keyring: PiiCipher, connection: sa.Connection, limit: int, after: Any
) -> tuple[int, int, Any, list[str]]:
    inbox = topic_inbox.c
    position = sa.tuple_(inbox.topic, inbox.partition, inbox.offset)
    rows = connection.execute(
        sa.select(inbox.topic, inbox.partition, inbox.offset, inbox.payload, inbox.payload_key_id)
        .where(
            sa.or_(inbox.payload_key_id.is_(None), inbox.payload_key_id != keyring.active_key_id),
            position > sa.tuple_(*after) if after is not None else sa.true(),
        )
        .order_by(inbox.topic, inbox.partition, inbox.offset)
        .limit(limit)
    ).all()
    updated, unreadable = _reseal_payloads(
        keyring,
        connection,
        topic_inbox,
        (
            (
                sa.and_(inbox.topic == topic, inbox.partition == partition, inbox.offset == offset),
                inbox_context(topic, partition, offset),
                payload,
                key_id,
            )
            for topic, partition, offset, payload, key_id in rows
        ),
    )
    last = (rows[-1][0], int(rows[-1][1]), int(rows[-1][2])) if rows else after
    return len(rows), updated, last, unreadable


def _reseal_dead_letters(
    keyring: PiiCipher, connection: sa.Connection, limit: int, after: Any
) -> tuple[int, int, Any, list[str]]:
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
            letters.id > after if after is not None else sa.true(),
        )
        .order_by(letters.id)
        .limit(limit)
    ).all()
    updated, unreadable = _reseal_payloads(
        keyring,
        connection,
        dead_letters,
        (
            (
                letters.id == letter_id,
                dead_letter_context(source, topic, partition, offset, event_id),
                payload,
                key_id,
            )
            for letter_id, source, topic, partition, offset, event_id, payload, key_id in rows
        ),
    )
    return len(rows), updated, rows[-1][0] if rows else after, unreadable


def _reseal_orders(
    keyring: PiiCipher, connection: sa.Connection, limit: int, after: Any
) -> tuple[int, int, Any, list[str]]:
    columns = orders.c
    rows = connection.execute(
        sa.select(columns.order_id, columns.email_ciphertext, columns.phone_ciphertext, columns.pii_key_id)
        .where(
            columns.pii_key_id.is_not(None),
            columns.pii_key_id != keyring.active_key_id,
            columns.order_id > after if after is not None else sa.true(),
        )
        .order_by(columns.order_id)
        .limit(limit)
    ).all()
    updated, unreadable = 0, []
    for order_id, email, phone, key_id in rows:
        try:
            resealed = {
                column: None
                if blob is None
                else keyring.seal(
                    keyring.open(bytes(blob), key_id, pii_context(order_id, field)),
                    pii_context(order_id, field),
                )
                for column, field, blob in (
                    ("email_ciphertext", "email", email),
                    ("phone_ciphertext", "phone", phone),
                )
            }
        except PiiDecryptionFailed:
            unreadable.append(f"order:{order_id}")
            continue
        updated += connection.execute(
            sa.update(orders)
            .where(columns.order_id == order_id, columns.pii_key_id == key_id)
            .values(**resealed, pii_key_id=keyring.active_key_id)
        ).rowcount
    return len(rows), updated, rows[-1][0] if rows else after, unreadable
