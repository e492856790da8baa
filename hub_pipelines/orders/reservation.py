"""The order transaction: one SERIALIZABLE transaction per order that reserves stock and books the order.

It inserts the order (its idempotency key is unique, so a duplicate finds the existing order instead),
locks the products in id order (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's BEGIN IMMEDIATE holds
the whole database), re-checks each price against the locked row, decrements stock, and writes the
items, the ledger posting, the `order.created` outbox row and the intake record. Insufficient stock or
a price that changed rolls all of it back. Lost races (40001, 40P01) run the transaction again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
import tenacity
from sqlalchemy import Connection

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.core.sql import insert_ignoring_duplicates, is_serialization_failure
from hub_pipelines.orders.intake import format_minor
from hub_pipelines.orders.ledger import add_outbox_event, post_order_placed
from hub_pipelines.orders.pii import PiiCipher, pii_context
from hub_pipelines.orders.pricing import PricedOrder, PriceRejected, check_price
from hub_pipelines.orders.tables import RESERVED, order_intake, order_items, orders, products

ORDER_ID_NAMESPACE = uuid.UUID("6f1c1f5e-9a38-4c52-8d0e-5b1d5e0f0a11")
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
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


def order_id_for(idempotency_key: str) -> str:
    """The same idempotency key always names the same order (and so the same payment key)."""
    return str(uuid.uuid5(ORDER_ID_NAMESPACE, idempotency_key))


def serializable_retrying(attempts: int = 30) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_serialization_failure),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=0.005, max=0.25),
        reraise=True,
    )


def reserve_order(
    database: SqlDatabase,
    position: IntakePosition,
    priced: PricedOrder,
    cipher: PiiCipher | None = None,
    *,
    attempts: int = 30,
) -> Reservation:
    """Book the order and reserve its stock in one serializable transaction, retried on lost races."""
    order_id = order_id_for(priced.request.idempotency_key)
    tries = 0

    def attempt() -> Reservation:
        nonlocal tries
        tries += 1
        with database.transaction("SERIALIZABLE") as connection:
            return _reserve(connection, position, priced, order_id, cipher, tries)

    try:
        return serializable_retrying(attempts)(attempt)
    except sa.exc.IntegrityError as taken:
        if _violated_table(taken) not in ("orders", "order_intake"):
            raise
    # The order exists already (a duplicate), or another worker booked this very event: book the
    # duplicate outside the serializable transaction, where no lost race can abort it.
    with database.transaction() as connection:
        existing = connection.execute(
            sa.select(orders.c.order_id, orders.c.status).where(
                orders.c.idempotency_key == priced.request.idempotency_key
            )
        ).first()
        if existing is None:
            return Reservation(None, None, duplicate=False, claimed=False, attempts=tries)
        claimed = _record_intake(
            connection, database.dialect, position, DUPLICATE, priced.request.idempotency_key, existing[0]
        )
    return Reservation(existing[0], existing[1], duplicate=True, claimed=claimed, attempts=tries)


def _violated_table(error: sa.exc.IntegrityError) -> str | None:
    """The table whose unique key the failed insert hit ('orders', 'order_intake'), when it says."""
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "table_name", None)
    if name:
        return str(name)
    text = str(error.orig)
    if "UNIQUE constraint failed: " in text:
        return text.split("UNIQUE constraint failed: ", 1)[1].split(".", 1)[0]
    return None


def _reserve(
    connection: Connection,
    position: IntakePosition,
    priced: PricedOrder,
    order_id: str,
    cipher: PiiCipher | None,
    tries: int,
) -> Reservation:
    """Plain INSERTs only (no ON CONFLICT, no lookups): under SSI a read of a unique index takes a
    predicate lock on its page, and concurrent orders writing the same pages would then abort each
    other. A duplicate key raises IntegrityError instead, which ends the attempt."""
    request = priced.request
    values: dict[str, object] = {
        "order_id": order_id,
        "idempotency_key": request.idempotency_key,
        "event_id": request.event_id,
        "customer_id": request.customer_id,
        "currency": priced.currency,
        "total_minor": priced.total_minor,
        "item_count": priced.item_count,
        "payment_method": request.payment_method,
        "status": RESERVED,
    }
    if cipher is not None:
        values["pii_key_id"] = cipher.active_key_id
        if request.email:
            values["email_ciphertext"] = cipher.encrypt(request.email, pii_context(order_id, "email"))
        if request.phone:
            values["phone_ciphertext"] = cipher.encrypt(request.phone, pii_context(order_id, "phone"))
    connection.execute(sa.insert(orders).values(**values))
    _take_stock(connection, priced)
    connection.execute(
        sa.insert(order_items),
        [
            {
                "order_id": order_id,
                "line_no": number,
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
            }
            for number, line in enumerate(priced.lines, start=1)
        ],
    )
    post_order_placed(connection, order_id, priced.currency, priced.total_minor)
    add_outbox_event(
        connection,
        order_id,
        "order.created",
        {
            "customer_id": request.customer_id,
            "currency": priced.currency,
            "total": format_minor(priced.total_minor, priced.currency),
            "items": [{"product_id": line.product_id, "quantity": line.quantity} for line in priced.lines],
        },
    )
    connection.execute(
        sa.insert(order_intake).values(
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            event_id=position.event_id,
            outcome=ACCEPTED,
            idempotency_key=request.idempotency_key,
            order_id=order_id,
        )
    )
    return Reservation(order_id, RESERVED, duplicate=False, claimed=True, attempts=tries)


def _take_stock(connection: Connection, priced: PricedOrder) -> None:
    wanted = {line.product_id: line for line in priced.lines}
    locked = connection.execute(
        sa.select(products.c.product_id, products.c.name, products.c.stock, products.c.unit_price_minor)
        .where(products.c.product_id.in_(sorted(wanted)))
        .order_by(products.c.product_id)
        .with_for_update()
    ).all()
    by_id = {row[0]: row for row in locked}
    for product_id in sorted(wanted):
        line = wanted[product_id]
        row = by_id.get(product_id)
        if row is None:
            raise PriceRejected(f"unknown product {product_id!r}")
        _, name, stock, price_minor = row
        if price_minor != line.unit_price_minor:
            sent = next(item.unit_price for item in priced.request.items if item.product_id == product_id)
            check_price(name, sent, int(price_minor), priced.currency)
            raise PriceRejected(f"price of {name} changed while the order was placed; please retry")
        if stock < line.quantity:
            raise InsufficientStock(
                f"insufficient stock for {name}: requested {line.quantity}, available {stock}"
            )
        connection.execute(
            sa.update(products)
            .where(products.c.product_id == product_id)
            .values(stock=products.c.stock - line.quantity)
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
        .values(
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            event_id=position.event_id,
            outcome=outcome,
            idempotency_key=idempotency_key,
            order_id=order_id,
            reason=reason,
        )
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
    source: str = DEAD_LETTER_SOURCE,
) -> bool:
    """Book a rejected event and dead-letter it with the reason, once; False if it was booked already."""

    def attempt() -> bool:
        with database.transaction() as connection:
            claimed = _record_intake(
                connection, database.dialect, position, REJECTED, idempotency_key, None, reason
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
                        payload=payload,
                    )
                )
            return claimed

    return serializable_retrying()(attempt)
