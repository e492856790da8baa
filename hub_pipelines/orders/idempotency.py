"""Idempotency keys as a payments engineer has them: scoped per customer, and never replayed for
another request.

A customer's key names one order (its id is derived from customer + key, and so is the gateway's
idempotency key). A second event with the same key is a redelivery when it asks for the same thing
(the same `OrderRequest.request_sha256`), and an `IdempotencyConflict` when it asks for other items,
amount, currency or payment method: Stripe's rule for a key reused with other parameters.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.intake import OrderRequest
from hub_pipelines.orders.tables import orders

ORDER_ID_NAMESPACE = uuid.UUID("6f1c1f5e-9a38-4c52-8d0e-5b1d5e0f0a11")


class IdempotencyConflict(ValueError):
    """The customer's idempotency key names an order that asked for other items, amount, currency or
    payment method; the message names both events."""


@dataclass(frozen=True)
class BookedOrder:
    order_id: str
    status: str
    event_id: str
    request_sha256: str | None


# Cached: admission and the reservation's rows both ask for every order's id, once each per batch.
@functools.lru_cache(maxsize=16_384)
def order_id_for(customer_id: str, idempotency_key: str) -> str:
    """A customer's idempotency key always names the same order (and so the same payment key);
    another customer's same key names another."""
    return str(uuid.uuid5(ORDER_ID_NAMESPACE, json.dumps([customer_id, idempotency_key])))


def booked_order(connection: Connection, request: OrderRequest) -> BookedOrder | None:
    """The order the customer's key names, if one was booked."""
    row = connection.execute(
        sa.select(orders.c.order_id, orders.c.status, orders.c.event_id, orders.c.request_sha256).where(
            orders.c.customer_id == request.customer_id,
            orders.c.idempotency_key == request.idempotency_key,
        )
    ).first()
    return None if row is None else BookedOrder(row[0], row[1], row[2], row[3])


def conflict_with(booked: BookedOrder, request: OrderRequest, event_id: str) -> IdempotencyConflict | None:
    """The conflict when event `event_id` asks for something else than the booked order did."""
    # Orders booked before fingerprints were kept have none: they can only be taken as duplicates.
    if booked.request_sha256 is None or booked.request_sha256 == request.request_sha256:
        return None
    return IdempotencyConflict(
        f"idempotency key {request.idempotency_key!r} of customer {request.customer_id!r} was used by "
        f"event {booked.event_id} (order {booked.order_id}) for other items, amount, currency or "
        f"payment method; event {event_id} is refused"
    )


def conflict_of(database: SqlDatabase, request: OrderRequest, event_id: str) -> IdempotencyConflict | None:
    """`conflict_with` the order the key names, if any: for an event refused before its reservation,
    whose refusal (an unknown product, no stock) would otherwise hide the reused key."""
    with database.transaction() as connection:
        booked = booked_order(connection, request)
    return None if booked is None else conflict_with(booked, request, event_id)
