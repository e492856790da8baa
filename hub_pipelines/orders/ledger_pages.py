"""The ledger's alerts that need a person, as pages: one incident each, under a dedup key that names it.

An order or event parked after repeated internal errors is out of the ledger's work until someone
clears it, and a parked order may have been charged; a hidden charge outcome holds stock while the
customer may have been charged; a corrupted inbox row lost its bytes at rest. Each is paged. A
declined payment (compensated: normal business) and an idempotency conflict (a client reusing a key,
counted per batch; a rate belongs in Prometheus) are only logged.
"""

from __future__ import annotations

from hub_pipelines.analytics.alerting import Alert
from hub_pipelines.orders.reservation import IntakePosition

RUNBOOK = "docs/operations.md, 'Dead letters of the order ledger'"


def hidden_dedup_key(order_id: str) -> str:
    """The one page an order whose charge outcome stays hidden gets, whichever batch sends it."""
    return f"charge-outcome-hidden/{order_id}"


def _at(position: IntakePosition) -> str:
    return f"{position.topic}/{position.partition}/{position.offset}"


def _trigger(dedup_key: str, metric: str, summary: str) -> Alert:
    return Alert(
        action="trigger", dedup_key=dedup_key, metric=f"orders/{metric}", summary=summary, group="orders"
    )


def hidden_outcome_page(order_id: str, reason: str) -> Alert:
    return _trigger(
        hidden_dedup_key(order_id),
        "charge_outcome_hidden",
        f"order {order_id}: {reason}. It waits in PAYMENT_UNKNOWN with its stock reserved; the customer "
        f"may have been charged. Never charge it by hand ({RUNBOOK}, 'A hidden charge outcome')",
    )


def parked_order_page(order_id: str, reason: str) -> Alert:
    return _trigger(
        f"order-parked/{order_id}",
        "order_parked",
        f"order {order_id} parked: {reason}. It is out of reconciliation, its stock reserved, and may "
        f"have been charged: look the charge up by the order id ({RUNBOOK}, 'A parked order')",
    )


def parked_event_page(position: IntakePosition, reason: str) -> Alert:
    return _trigger(
        f"event-parked/{_at(position)}",
        "event_parked",
        f"order event {position.topic} partition {position.partition} offset {position.offset} "
        f"parked: {reason}. It is dead-lettered until the fix is deployed and it is replayed ({RUNBOOK})",
    )


def corrupted_row_page(position: IntakePosition, reason: str) -> Alert:
    return _trigger(
        f"inbox-row-corrupted/{_at(position)}",
        "inbox_row_corrupted",
        f"{reason}. The order event is dead-lettered with its stored bytes "
        "(docs/operations.md, 'Rotate the PII key')",
    )
