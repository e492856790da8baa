"""The double-entry ledger: every order state change posts entries whose debits equal their credits.

Accounts: `accounts_receivable` (what customers owe), `revenue`, `gateway_clearing` (money the
payment gateway holds for us) and `revenue_reversals` (sales undone by a failed payment). An order
in a final state leaves its receivable at zero. Entries are only ever inserted (triggers refuse
UPDATE and DELETE).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa
from opentelemetry import trace
from sqlalchemy import Connection

from hub_pipelines.orders.tables import ledger_entries, outbox

RECEIVABLE = "accounts_receivable"
REVENUE = "revenue"
GATEWAY_CLEARING = "gateway_clearing"
REVENUE_REVERSALS = "revenue_reversals"
ORDER_PLACED = "order placed"
PAYMENT_CAPTURED = "payment captured"


class UnbalancedPosting(ValueError):
    """A posting whose debits and credits differ: refused before anything is written."""


@dataclass(frozen=True)
class Entry:
    account: str
    debit_minor: int = 0
    credit_minor: int = 0


def posting_rows(
    order_id: str, currency: str, memo: str, entries: Sequence[Entry]
) -> list[dict[str, object]]:
    """The ledger rows of one balanced posting, under a fresh posting id (nothing is written)."""
    debits = sum(entry.debit_minor for entry in entries)
    credits = sum(entry.credit_minor for entry in entries)
    if debits != credits:
        raise UnbalancedPosting(
            f"posting {memo!r} for order {order_id}: debits {debits} != credits {credits}"
        )
    posting_id = str(uuid.uuid4())
    return [
        {
            "posting_id": posting_id,
            "order_id": order_id,
            "account": entry.account,
            "debit_minor": entry.debit_minor,
            "credit_minor": entry.credit_minor,
            "currency": currency,
            "memo": memo,
        }
        for entry in entries
        if entry.debit_minor or entry.credit_minor
    ]


def post(connection: Connection, order_id: str, currency: str, memo: str, entries: Sequence[Entry]) -> None:
    """Insert one balanced posting (in the caller's transaction)."""
    rows = posting_rows(order_id, currency, memo, entries)
    if rows:
        connection.execute(sa.insert(ledger_entries), rows)


def order_placed_entries(total_minor: int) -> list[Entry]:
    return [Entry(RECEIVABLE, debit_minor=total_minor), Entry(REVENUE, credit_minor=total_minor)]


def order_paid_entries(total_minor: int) -> list[Entry]:
    return [Entry(GATEWAY_CLEARING, debit_minor=total_minor), Entry(RECEIVABLE, credit_minor=total_minor)]


def post_order_failed(connection: Connection, order_id: str, currency: str, total_minor: int) -> None:
    post(
        connection,
        order_id,
        currency,
        "payment failed: sale reversed",
        [Entry(REVENUE_REVERSALS, debit_minor=total_minor), Entry(RECEIVABLE, credit_minor=total_minor)],
    )


def unbalanced_postings(connection: Connection) -> list[str]:
    """Ids of postings whose debits differ from their credits (empty when the ledger balances)."""
    rows = connection.execute(
        sa.select(ledger_entries.c.posting_id)
        .group_by(ledger_entries.c.posting_id)
        .having(sa.func.sum(ledger_entries.c.debit_minor) != sa.func.sum(ledger_entries.c.credit_minor))
    )
    return [row[0] for row in rows]


def current_traceparent() -> str:
    """The active span's W3C traceparent, or a fresh trace when there is none, so every event has one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    # Trace ids must be unique, not secret: the process's PRNG, not two reads of os.urandom per event.
    return f"00-{random.getrandbits(128) or 1:032x}-{random.getrandbits(64) or 1:016x}-01"


_encode_payload = msgspec.json.Encoder().encode
"""Compact JSON, as json.dumps with tight separators wrote (non-ASCII as UTF-8, not escaped), with
no encoder built per call: two outbox rows per order."""


def outbox_row(order_id: str, event_type: str, body: dict[str, object]) -> dict[str, object]:
    """One outbox row announcing `event_type` for the order, under a fresh event id (nothing is written)."""
    event_id = str(uuid.uuid4())
    payload = {"event_id": event_id, "type": event_type, "order_id": order_id, **body}
    return {
        "event_id": event_id,
        "order_id": order_id,
        "event_type": event_type,
        "payload": _encode_payload(payload),
        "traceparent": current_traceparent(),
    }


def add_outbox_event(connection: Connection, order_id: str, event_type: str, body: dict[str, object]) -> str:
    """Queue an event for the relay, in the same transaction as the state change it announces."""
    row = outbox_row(order_id, event_type, body)
    connection.execute(sa.insert(outbox), [row])
    return str(row["event_id"])
