"""Recording a payment's outcome: PAID, PAYMENT_UNKNOWN, or FAILED with compensation.

Each is one transaction that moves the order only from a state that may still change (RESERVED or
PAYMENT_UNKNOWN), so a rerun after a crash, or a second worker, records every outcome once. Compensation
gives the reserved stock back, posts the reversal and queues `order.failed`; the alert is raised by the
caller after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import msgspec
import sqlalchemy as sa

from hub_pipelines.core.ports import ChargeRequest, ChargeResult, SqlDatabase
from hub_pipelines.core.sql import serializable_retrying
from hub_pipelines.orders.attempts import order_parked
from hub_pipelines.orders.intake import format_minor
from hub_pipelines.orders.ledger import (
    GATEWAY_CLEARING,
    PAYMENT_CAPTURED,
    RECEIVABLE,
    add_outbox_event,
    order_paid_entries,
    outbox_row,
    post_order_failed,
    posting_rows,
)
from hub_pipelines.orders.reservation_sql import RECORD_PAID, RECORD_PAID_PSYCOPG
from hub_pipelines.orders.tables import (
    FAILED,
    OPEN_STATUSES,
    PAID,
    PAYMENT_UNKNOWN,
    RESERVED,
    ledger_entries,
    order_items,
    orders,
    outbox,
    payments,
    products,
)

# Only a type here: psycopg (the PostgreSQL driver) loads in a run, not with the code location.
if TYPE_CHECKING:
    import psycopg

# Each settlement is one guarded UPDATE of the order row (status still open) plus inserts: the row lock
# and READ COMMITTED's re-check of the WHERE after a wait already let exactly one transition win, and
# stock is released with relative updates. SERIALIZABLE would only add aborts from SSI's page locks.
# Deadlocks (40P01) are still retried.
SETTLEMENT_ISOLATION = "READ COMMITTED"


@dataclass(frozen=True)
class PendingOrder:
    charge: ChargeRequest
    status: str


def pending_payments(
    database: SqlDatabase, *, stale_after_s: float = 60.0, limit: int = 1000
) -> list[PendingOrder]:
    """Orders still waiting for a payment outcome: every PAYMENT_UNKNOWN, and RESERVED ones older than
    `stale_after_s` (younger ones are most likely being paid by the worker that reserved them); not
    those parked after repeated internal errors."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    with database.transaction() as connection:
        rows = connection.execute(
            sa.select(
                orders.c.order_id,
                orders.c.total_minor,
                orders.c.currency,
                orders.c.customer_id,
                orders.c.payment_method,
                orders.c.status,
            )
            .where(
                sa.or_(
                    orders.c.status == PAYMENT_UNKNOWN,
                    sa.and_(orders.c.status == RESERVED, orders.c.updated_at <= cutoff),
                ),
                ~order_parked(orders.c.order_id),
            )
            .order_by(orders.c.created_at)
            .limit(limit)
        ).all()
    return [PendingOrder(ChargeRequest(row[0], int(row[1]), row[2], row[3], row[4]), row[5]) for row in rows]


_MARK_PAID = (
    sa.update(orders)
    .where(
        orders.c.order_id == sa.bindparam("key"),
        # Not IN (...): an expanding parameter cannot be sent as executemany.
        sa.or_(*(orders.c.status == status for status in OPEN_STATUSES)),
    )
    .values(
        status=PAID,
        paid_at=sa.func.now(),
        updated_at=sa.func.now(),
        payment_reference=sa.bindparam("reference"),
    )
)


def _move(connection: sa.Connection, order_id: str, to: str, **values: object) -> bool:
    moved = connection.execute(
        sa.update(orders)
        .where(orders.c.order_id == order_id, orders.c.status.in_(OPEN_STATUSES))
        .values(status=to, updated_at=sa.func.now(), **values)
    ).rowcount
    return bool(moved)


def record_paid(database: SqlDatabase, charge: ChargeRequest, result: ChargeResult) -> bool:
    """PAID, the successful charge, the ledger posting and `order.paid`; False if already final."""
    return charge.order_id in record_paid_many(database, [(charge, result)])


def record_paid_many(
    database: SqlDatabase,
    settled: Sequence[tuple[ChargeRequest, ChargeResult]],
    *,
    held: psycopg.Connection[Any] | None = None,
) -> set[str]:
    """Record several successful charges in one transaction; returns the orders it moved to PAID.

    Each order still moves only from an open state, so orders already final (recorded by another
    worker, or by an earlier run) are left alone. The open orders are locked in id order first, so
    two such transactions never deadlock on each other's rows. On a `held` connection (PostgreSQL,
    in autocommit, see `HeldConnections`) the one statement is the transaction: one round trip, no
    BEGIN or COMMIT.
    """
    by_order = {charge.order_id: (charge, result) for charge, result in settled}
    if not by_order:
        return set()

    def attempt() -> set[str]:
        if held is not None:
            return _record_paid_alone(held, list(by_order.values()))
        with database.transaction(SETTLEMENT_ISOLATION) as connection:
            if connection.dialect.name == "postgresql":
                return _record_paid_in_one_statement(connection, list(by_order.values()))
            open_ids = (
                connection.execute(
                    sa.select(orders.c.order_id)
                    .where(orders.c.order_id.in_(sorted(by_order)), orders.c.status.in_(OPEN_STATUSES))
                    .order_by(orders.c.order_id)
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            if not open_ids:
                return set()
            moving = [by_order[order_id] for order_id in open_ids]
            connection.execute(
                _MARK_PAID,
                [{"key": charge.order_id, "reference": result.reference} for charge, result in moving],
            )
            connection.execute(
                sa.insert(payments),
                [
                    {
                        "order_id": charge.order_id,
                        "gateway_reference": result.reference or f"unreferenced-{charge.order_id}",
                        "status": "succeeded",
                        "amount_minor": charge.amount_minor,
                        "currency": charge.currency,
                    }
                    for charge, result in moving
                ],
            )
            connection.execute(
                sa.insert(ledger_entries),
                [
                    row
                    for charge, _ in moving
                    for row in posting_rows(
                        charge.order_id,
                        charge.currency,
                        PAYMENT_CAPTURED,
                        order_paid_entries(charge.amount_minor),
                    )
                ],
            )
            connection.execute(
                sa.insert(outbox),
                [
                    outbox_row(charge.order_id, "order.paid", _paid_body(charge, result))
                    for charge, result in moving
                ],
            )
            return set(open_ids)

    return serializable_retrying()(attempt)


def _record_paid_in_one_statement(
    connection: sa.Connection, settled: list[tuple[ChargeRequest, ChargeResult]]
) -> set[str]:
    return set(connection.execute(RECORD_PAID, _record_paid_parameters(settled)).scalars())


def _record_paid_alone(
    connection: psycopg.Connection[Any], settled: list[tuple[ChargeRequest, ChargeResult]]
) -> set[str]:
    """RECORD_PAID as a transaction of its own on an autocommit connection (one statement is atomic,
    and it is right at any isolation level: it moves only still-open rows it has locked, and lost
    races are retried). Against BEGIN, the statement and COMMIT in pipeline mode, ~150 us less CPU
    per transaction in psycopg."""
    assert connection.autocommit, "RECORD_PAID alone needs an autocommit connection"
    cursor = connection.execute(RECORD_PAID_PSYCOPG, _record_paid_parameters(settled))
    return {row[0] for row in cursor.fetchall()}


class _SettledOrder(msgspec.Struct):
    """One order of RECORD_PAID's `settled` document."""

    order_id: str
    reference: str | None
    amount_minor: int
    currency: str
    posting_id: str
    event_id: str
    payload: bytes
    traceparent: str


_encode_settled = msgspec.json.Encoder().encode


def _record_paid_parameters(settled: list[tuple[ChargeRequest, ChargeResult]]) -> dict[str, object]:
    orders_settled = []
    for charge, result in settled:
        event = outbox_row(charge.order_id, "order.paid", _paid_body(charge, result))
        orders_settled.append(
            _SettledOrder(
                charge.order_id,
                result.reference,
                charge.amount_minor,
                charge.currency,
                str(uuid.uuid4()),
                str(event["event_id"]),
                cast(bytes, event["payload"]),
                str(event["traceparent"]),
            )
        )
    return {
        # msgspec writes bytes as base64, which the statement decodes.
        "settled": _encode_settled(orders_settled).decode(),
        "memo": PAYMENT_CAPTURED,
        "debit_account": GATEWAY_CLEARING,
        "credit_account": RECEIVABLE,
    }


def _paid_body(charge: ChargeRequest, result: ChargeResult) -> dict[str, object]:
    return {
        "total": format_minor(charge.amount_minor, charge.currency),
        "currency": charge.currency,
        "payment_reference": result.reference,
    }


def record_unknown(database: SqlDatabase, order_id: str, reason: str) -> bool:
    """PAYMENT_UNKNOWN with the reason, so the next batch reconciles it with the same key."""
    with database.transaction() as connection:
        moved = connection.execute(
            sa.update(orders)
            .where(orders.c.order_id == order_id, orders.c.status == RESERVED)
            .values(status=PAYMENT_UNKNOWN, failure_reason=reason, updated_at=sa.func.now())
        ).rowcount
    return bool(moved)


HIDDEN_OUTCOME = "charge outcome hidden"
"""How the failure reason of an order whose charge outcome the gateway hides begins."""


def record_hidden(database: SqlDatabase, order_id: str, reason: str) -> bool:
    """PAYMENT_UNKNOWN as `record_unknown`, the reason starting with `HIDDEN_OUTCOME`; True only for the
    batch that first records the order hidden (of all batches and processes: the row's update decides),
    so an order that stays hidden is paged once."""
    with database.transaction() as connection:
        first = connection.execute(
            sa.update(orders)
            .where(
                orders.c.order_id == order_id,
                orders.c.status.in_(OPEN_STATUSES),
                sa.or_(
                    orders.c.failure_reason.is_(None),
                    sa.not_(orders.c.failure_reason.startswith(HIDDEN_OUTCOME, autoescape=True)),
                ),
            )
            .values(
                status=PAYMENT_UNKNOWN, failure_reason=f"{HIDDEN_OUTCOME}: {reason}", updated_at=sa.func.now()
            )
        ).rowcount
    return bool(first)


def forget_hidden(database: SqlDatabase, order_id: str, reason: str) -> None:
    """Undo what `record_hidden` decided for `reason` (its page was not delivered), so the next batch that
    still finds the charge hidden records it, and pages, again; an order settled since is left alone."""
    with database.transaction() as connection:
        connection.execute(
            sa.update(orders)
            .where(orders.c.order_id == order_id, orders.c.failure_reason == f"{HIDDEN_OUTCOME}: {reason}")
            .values(failure_reason=reason, updated_at=sa.func.now())
        )


def compensate(
    database: SqlDatabase, charge: ChargeRequest, reason: str, reference: str | None = None
) -> bool:
    """FAILED with the reason, the reserved stock released, the sale reversed, `order.failed` queued.

    False when the order was already final (nothing is released twice).
    """

    def attempt() -> bool:
        with database.transaction(SETTLEMENT_ISOLATION) as connection:
            if not _move(connection, charge.order_id, FAILED, failure_reason=reason):
                return False
            items = connection.execute(
                sa.select(order_items.c.product_id, order_items.c.quantity)
                .where(order_items.c.order_id == charge.order_id)
                .order_by(order_items.c.product_id)
            ).all()
            for product_id, quantity in items:
                connection.execute(
                    sa.update(products)
                    .where(products.c.product_id == product_id)
                    .values(stock=products.c.stock + quantity)
                )
            if reference:
                connection.execute(
                    sa.insert(payments).values(
                        order_id=charge.order_id,
                        gateway_reference=reference,
                        status="declined",
                        amount_minor=charge.amount_minor,
                        currency=charge.currency,
                        detail=reason,
                    )
                )
            post_order_failed(connection, charge.order_id, charge.currency, charge.amount_minor)
            add_outbox_event(connection, charge.order_id, "order.failed", {"reason": reason})
            return True

    return serializable_retrying()(attempt)
