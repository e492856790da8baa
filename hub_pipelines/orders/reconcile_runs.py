"""When the ledger needs a run although no order arrives.

A ledger batch leaves some orders open on purpose: the gateway was unavailable (deferred, the breaker
open), its answer was lost (payment_unknown) or an internal error is to be retried (retry). The next
batch reconciles every such order first, with the same idempotency key. Runs, though, follow the
topic: once it is quiet no run comes, and those orders would wait for the next order to arrive (a
chaos run left 681 of them RESERVED after a gateway outage at the end of its load). So while the
newest ledger batch reports open orders and no orders run is in flight, a catch-up run is asked for
once that batch is older than the wait; each catch-up is itself a ledger batch, which spaces them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OPEN_OUTCOMES = ("deferred", "payment_unknown", "retry")


def open_orders(metadata: Mapping[str, object]) -> int:
    """Orders a ledger batch left open, from its materialization's metadata (BatchReport.as_metadata)."""
    total = 0
    for prefix in ("orders", "reconciled"):
        for status in OPEN_OUTCOMES:
            value = metadata.get(f"{prefix}_{status}", 0)
            total += int(value) if isinstance(value, int | float) else 0
    return total


@dataclass(frozen=True)
class ReconcileStep:
    """A run key to request (None: no run) and why."""

    run_key: str | None
    reason: str


def next_reconcile_step(
    newest_ledger: int | None, open_count: int, age_s: float, run_in_flight: bool, wait_s: float
) -> ReconcileStep:
    """The catch-up run for the newest ledger batch (its storage id), if one is due."""
    if newest_ledger is None:
        return ReconcileStep(None, "the ledger has not placed a batch yet")
    if not open_count:
        return ReconcileStep(None, f"ledger batch #{newest_ledger} left no order open")
    if run_in_flight:
        return ReconcileStep(None, f"{open_count} orders open; an orders run in flight reconciles them")
    if age_s < wait_s:
        return ReconcileStep(
            None,
            f"{open_count} orders open after ledger batch #{newest_ledger}; asking in {wait_s - age_s:.0f} s",
        )
    return ReconcileStep(
        f"orders-reconcile:{newest_ledger}", f"{open_count} orders left open by #{newest_ledger}"
    )
