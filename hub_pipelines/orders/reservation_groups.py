"""A group of orders reserved in one SERIALIZABLE transaction: PostgreSQL's `reserve_orders` (0011).

The group costs one round trip and one commit (BEGIN, the call and COMMIT pipelined on a held
connection) instead of one per order. The function decides each order in the group's order (the
inbox's offset order) within its own block, so an order refused for any reason rolls back its own
writes only. For each order the answer is its `Reservation`, or None: the caller then places that
order on its own with `reserve_order`, which names the reason (stock, price, a duplicate or a reused
key, an event another ledger booked, a row the database refuses). Groups of every lane take one table
lock first (`reserve_group_lock`, 0012), before their snapshot, so they queue behind each other
instead of aborting each other on the products they all sell; a race still lost (to an order
reserved on its own) aborts the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from hub_pipelines.core.sql import serializable_retrying
from hub_pipelines.orders.pricing import PricedOrder
from hub_pipelines.orders.reservation import (
    Reservation,
    ReservationWrites,
    reserve_parameters,
)
from hub_pipelines.orders.reservation_sql import LOCK_RESERVE_GROUPS, RESERVE_ORDERS_PSYCOPG
from hub_pipelines.orders.tables import RESERVED

# psycopg (the PostgreSQL driver) loads with the first reservation, never with the code location.
if TYPE_CHECKING:
    import psycopg

RESERVED_OUTCOME = "reserved"

_encode = msgspec.json.Encoder().encode


def reserve_group(
    connection: psycopg.Connection[Any],
    orders: Sequence[tuple[PricedOrder, ReservationWrites]],
    *,
    attempts: int = 30,
) -> list[Reservation | None]:
    """Reserve `orders` (each priced, with its rows from `reservation_writes`) in one transaction on
    `connection` (a held SERIALIZABLE connection, see `HeldConnections`), retried whole on lost
    races; one answer per order, in order."""
    if not orders:
        return []
    # msgspec writes bytes (ciphertexts, outbox payloads) as base64, which the function decodes.
    document = _encode([reserve_parameters(priced, writes) for priced, writes in orders]).decode()
    tries = 0

    def attempt() -> list[str]:
        nonlocal tries
        tries += 1
        try:
            with connection.pipeline():
                connection.execute(LOCK_RESERVE_GROUPS)
                cursor = connection.execute(RESERVE_ORDERS_PSYCOPG, (document,))
                connection.commit()
            row = cursor.fetchone()
        except BaseException:
            if not connection.closed:
                connection.rollback()
            raise
        assert row is not None
        return list(row[0])

    outcomes = serializable_retrying(attempts)(attempt)
    return [
        Reservation(str(written.order["order_id"]), RESERVED, duplicate=False, claimed=True, attempts=tries)
        if outcome == RESERVED_OUTCOME
        else None
        for (_, written), outcome in zip(orders, outcomes, strict=True)
    ]
