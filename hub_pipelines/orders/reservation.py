"""The order transaction: one SERIALIZABLE transaction per order that reserves stock and books the order.

It inserts the order (its idempotency key is unique per customer, so a duplicate finds the existing
order instead; one that asked for something else is an `IdempotencyConflict`),
locks the products in id order (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's BEGIN IMMEDIATE holds
the whole database), re-checks each price against the locked row, decrements stock, and writes the
items, the ledger posting, the `order.created` outbox row and the intake record. Insufficient stock or
a price that changed rolls all of it back. Lost races (40001, 40P01) run the transaction again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.core.sql import insert_ignoring_duplicates, serializable_retrying
from hub_pipelines.orders.attempts import storable_text
from hub_pipelines.orders.idempotency import booked_order, conflict_with, order_id_for
from hub_pipelines.orders.intake import format_minor
from hub_pipelines.orders.ledger import ORDER_PLACED, order_placed_entries, outbox_row, posting_rows
from hub_pipelines.orders.pii import PiiCipher, pii_context
from hub_pipelines.orders.pricing import PricedOrder, PriceRejected, check_price
from hub_pipelines.orders.reservation_sql import RESERVE_ORDER, RESERVE_ORDER_PSYCOPG, SHORT_RESERVATION
from hub_pipelines.orders.sealed_payloads import seal_dead_letter_payload
from hub_pipelines.orders.tables import (
    RESERVED,
    ledger_entries,
    order_intake,
    order_items,
    orders,
    outbox,
    products,
)

# psycopg (the PostgreSQL driver) loads with the first reservation, never with the code location.
if TYPE_CHECKING:
    import psycopg

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
PARKED = "parked"
"""Dead-lettered after repeated internal errors: no fault of the event was found."""
DEAD_LETTER_SOURCE = "orders-intake"


class InsufficientStock(ValueError):
    """A product has less stock than the order asks for; the order is rejected and nothing is written."""


@dataclass(frozen=True)
class IntakePosition:
    """Where an event sits in the inbox: the key of its intake record."""

    topic: str
    partition: int
    offset: int
    event_id: str


@dataclass(frozen=True)
class Reservation:
    """What the order transaction did; `claimed` is False when another worker had booked the event."""

    order_id: str | None
    status: str | None
    duplicate: bool
    claimed: bool
    attempts: int


# A unique key of one of these tables says the order (its id comes from the idempotency key, so its
# items' keys too) or this very inbox position was booked already. Which one a duplicate trips first
# is up to the planner when all writes are one statement.
_TAKEN_KEYS = frozenset({"orders", "order_items", "order_intake"})


def reserve_order(
    database: SqlDatabase,
    position: IntakePosition,
    priced: PricedOrder,
    cipher: PiiCipher | None = None,
    *,
    attempts: int = 30,
    connection: psycopg.Connection[Any] | None = None,
) -> Reservation:
    """Book the order and reserve its stock in one serializable transaction, retried on lost races.

    With `connection` (a PostgreSQL connection set to SERIALIZABLE, see `HeldConnections`) the
    transaction runs on it in one round trip; without, on a connection from `database`'s pool.
    """
    import psycopg

    request = priced.request
    writes = reservation_writes(position, priced, cipher)
    order_id = str(writes.order["order_id"])
    tries = 0

    def attempt() -> Reservation:
        nonlocal tries
        tries += 1
        if connection is not None:
            _reserve_pipelined(connection, priced, writes)
        else:
            with database.transaction("SERIALIZABLE") as pooled:
                if pooled.dialect.name == "postgresql":
                    _reserve_in_one_statement(pooled, priced, writes)
                else:
                    _reserve_statement_by_statement(pooled, priced, writes)
        return Reservation(order_id, RESERVED, duplicate=False, claimed=True, attempts=tries)

    try:
        return serializable_retrying(attempts)(attempt)
    except (sa.exc.IntegrityError, psycopg.IntegrityError) as taken:
        if _violated_table(taken) not in _TAKEN_KEYS:
            raise
    # The order exists already (a duplicate), or another worker booked this very event: book the
    # duplicate outside the serializable transaction, where no lost race can abort it.
    with database.transaction() as booking:
        existing = booked_order(booking, request)
        if existing is None:
            return Reservation(None, None, duplicate=False, claimed=False, attempts=tries)
        conflict = conflict_with(existing, request, position.event_id)
        if conflict is not None:
            raise conflict
        existing_order_id, status = existing.order_id, existing.status
        claimed = _record_intake(
            booking, database.dialect, position, DUPLICATE, request.idempotency_key, existing_order_id
        )
    return Reservation(existing_order_id, status, duplicate=True, claimed=claimed, attempts=tries)


def _violated_table(error: sa.exc.IntegrityError | psycopg.IntegrityError) -> str | None:
    """The table whose unique key the failed insert hit ('orders', 'order_intake'), when it says."""
    original = error.orig if isinstance(error, sa.exc.IntegrityError) else error
    diag = getattr(original, "diag", None)
    name = getattr(diag, "table_name", None)
    if name:
        return str(name)
    text = str(original)
    if "UNIQUE constraint failed: " in text:
        return text.split("UNIQUE constraint failed: ", 1)[1].split(".", 1)[0]
    return None


@dataclass(frozen=True)
class ReservationWrites:
    """The rows a reservation writes, built once (PII encrypted once) for every attempt."""

    order: dict[str, object]
    placed: list[dict[str, object]]
    created: dict[str, object]
    intake: dict[str, object]


def reservation_writes(
    position: IntakePosition, priced: PricedOrder, cipher: PiiCipher | None
) -> ReservationWrites:
    request = priced.request
    order_id = order_id_for(request.customer_id, request.idempotency_key)
    return ReservationWrites(
        order=_order_row(priced, order_id, cipher),
        placed=posting_rows(
            order_id, priced.currency, ORDER_PLACED, order_placed_entries(priced.total_minor)
        ),
        created=outbox_row(order_id, "order.created", _created_body(priced)),
        intake=_intake_row(position, ACCEPTED, request.idempotency_key, order_id),
    )


def _order_row(priced: PricedOrder, order_id: str, cipher: PiiCipher | None) -> dict[str, object]:
    request = priced.request
    row: dict[str, object] = {
        "order_id": order_id,
        "idempotency_key": request.idempotency_key,
        "event_id": request.event_id,
        "customer_id": request.customer_id,
        "email_ciphertext": None,
        "phone_ciphertext": None,
        "pii_key_id": None,
        "currency": priced.currency,
        "total_minor": priced.total_minor,
        "item_count": priced.item_count,
        "payment_method": request.payment_method,
        "status": RESERVED,
        "request_sha256": request.request_sha256,
    }
    if cipher is not None:
        row["pii_key_id"] = cipher.active_key_id
        if request.email:
            row["email_ciphertext"] = cipher.encrypt(request.email, pii_context(order_id, "email"))
        if request.phone:
            row["phone_ciphertext"] = cipher.encrypt(request.phone, pii_context(order_id, "phone"))
    return row


def _created_body(priced: PricedOrder) -> dict[str, object]:
    return {
        "customer_id": priced.request.customer_id,
        "currency": priced.currency,
        "total": format_minor(priced.total_minor, priced.currency),
        "items": [{"product_id": line.product_id, "quantity": line.quantity} for line in priced.lines],
    }


def _intake_row(
    position: IntakePosition,
    outcome: str,
    idempotency_key: str | None,
    order_id: str | None,
    reason: str | None = None,
) -> dict[str, object]:
    return {
        "topic": position.topic,
        "partition": position.partition,
        "offset": position.offset,
        "event_id": position.event_id,
        "outcome": outcome,
        "idempotency_key": idempotency_key,
        "order_id": order_id,
        "reason": reason,
    }


def _reserve_in_one_statement(connection: Connection, priced: PricedOrder, writes: ReservationWrites) -> None:
    """Every write of the reservation in one call of `reserve_order` (RESERVE_ORDER)."""
    try:
        connection.execute(RESERVE_ORDER, reserve_parameters(priced, writes))
    except sa.exc.DBAPIError as failed:
        _raise_if_short(failed.orig, priced)
        raise


def _reserve_pipelined(
    connection: psycopg.Connection[Any], priced: PricedOrder, writes: ReservationWrites
) -> None:
    """RESERVE_ORDER on a held connection: BEGIN, the call and COMMIT in one round trip (pipeline
    mode); the function raises when a line was not taken, so nothing is committed then."""
    try:
        with connection.pipeline():
            connection.execute(RESERVE_ORDER_PSYCOPG, reserve_parameters(priced, writes))
            connection.commit()
    except BaseException as failed:
        if not connection.closed:
            connection.rollback()
        _raise_if_short(failed, priced)
        raise


def _raise_if_short(error: BaseException | None, priced: PricedOrder) -> None:
    """For `reserve_order`'s SHORT_RESERVATION, the reason a line was not taken, from the rows it locked."""
    if getattr(error, "sqlstate", None) != SHORT_RESERVATION:
        return
    detail = getattr(getattr(error, "diag", None), "message_detail", None)
    locked = json.loads(detail or "[]")
    _refuse_unless_available(priced, {row[0]: (row[1], row[2], row[3]) for row in locked})
    raise RuntimeError(f"{error}: no reason found among the locked rows {detail}") from error


def reserve_parameters(priced: PricedOrder, writes: ReservationWrites) -> dict[str, object]:
    lines, order, placed, created, intake = (
        priced.lines,
        writes.order,
        writes.placed,
        writes.created,
        writes.intake,
    )
    return {
        **order,
        "product_ids": [line.product_id for line in lines],
        "quantities": [line.quantity for line in lines],
        "prices": [line.unit_price_minor for line in lines],
        "posting_id": placed[0]["posting_id"],
        "memo": ORDER_PLACED,
        "accounts": [row["account"] for row in placed],
        "debits": [row["debit_minor"] for row in placed],
        "credits": [row["credit_minor"] for row in placed],
        "outbox_event_id": created["event_id"],
        "outbox_event_type": created["event_type"],
        "outbox_payload": created["payload"],
        "traceparent": created["traceparent"],
        "topic": intake["topic"],
        "partition": intake["partition"],
        "offset": intake["offset"],
        "intake_event_id": intake["event_id"],
        "outcome": intake["outcome"],
    }


def _reserve_statement_by_statement(
    connection: Connection, priced: PricedOrder, writes: ReservationWrites
) -> None:
    """The same writes for SQLite (no data-modifying CTEs; BEGIN IMMEDIATE holds the database)."""
    order, created, intake = writes.order, writes.created, writes.intake
    connection.execute(sa.insert(orders), [order])
    wanted = sorted(priced.lines, key=lambda line: line.product_id)
    locked = connection.execute(
        sa.select(products.c.product_id, products.c.name, products.c.stock, products.c.unit_price_minor)
        .where(products.c.product_id.in_([line.product_id for line in wanted]))
        .order_by(products.c.product_id)
        .with_for_update()
    ).all()
    _refuse_unless_available(priced, {row[0]: (row[1], row[2], row[3]) for row in locked})
    for line in wanted:
        connection.execute(
            sa.update(products)
            .where(products.c.product_id == line.product_id)
            .values(stock=products.c.stock - line.quantity)
        )
    connection.execute(
        sa.insert(order_items),
        [
            {
                "order_id": order["order_id"],
                "line_no": number,
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
            }
            for number, line in enumerate(priced.lines, start=1)
        ],
    )
    connection.execute(sa.insert(ledger_entries), writes.placed)
    connection.execute(sa.insert(outbox), [created])
    connection.execute(sa.insert(order_intake), [intake])


def _refuse_unless_available(priced: PricedOrder, locked: dict[str, tuple[str, int, int]]) -> None:
    """Raise for the first product (in id order) that is unknown, repriced or short of stock."""
    for line in sorted(priced.lines, key=lambda line: line.product_id):
        row = locked.get(line.product_id)
        if row is None:
            raise PriceRejected(f"unknown product {line.product_id!r}")
        name, stock, price_minor = row
        if price_minor != line.unit_price_minor:
            sent = next(
                item.unit_price for item in priced.request.items if item.product_id == line.product_id
            )
            check_price(name, sent, int(price_minor), priced.currency)
            raise PriceRejected(f"price of {name} changed while the order was placed; please retry")
        if stock < line.quantity:
            raise InsufficientStock(
                f"insufficient stock for {name}: requested {line.quantity}, available {stock}"
            )


def _record_intake(
    connection: Connection,
    dialect: str,
    position: IntakePosition,
    outcome: str,
    idempotency_key: str | None,
    order_id: str | None,
    reason: str | None = None,
) -> bool:
    """Book the event's outcome; False when another worker already booked this inbox position."""
    inserted = connection.execute(
        insert_ignoring_duplicates(order_intake, dialect)
        .values(_intake_row(position, outcome, idempotency_key, order_id, reason))
        .returning(order_intake.c.offset)
    ).first()
    return inserted is not None


def record_rejection(
    database: SqlDatabase,
    position: IntakePosition,
    reason: str,
    payload: bytes,
    idempotency_key: str | None = None,
    *,
    outcome: str = REJECTED,
    source: str = DEAD_LETTER_SOURCE,
) -> bool:
    """Book a rejected event and dead-letter it with the reason, once; False if it was booked already."""
    reason = storable_text(reason)

    def attempt() -> bool:
        with database.transaction() as connection:
            claimed = _record_intake(
                connection, database.dialect, position, outcome, idempotency_key, None, reason
            )
            if claimed:
                connection.execute(
                    insert_ignoring_duplicates(dead_letters, database.dialect).values(
                        source=source,
                        topic=position.topic,
                        partition=position.partition,
                        offset=position.offset,
                        event_id=position.event_id,
                        reason=reason,
                        **seal_dead_letter_payload(
                            source,
                            position.topic,
                            position.partition,
                            position.offset,
                            position.event_id,
                            payload,
                        ),
                    )
                )
            return claimed

    return serializable_retrying()(attempt)
