"""When the work after the ledger (outbox relay, customer confirmations, inventory snapshot) gets a run.

That work decides no order's outcome, so it runs in its own runs, off the landing lanes: an order is
PAID as soon as its lane's ledger has placed it, not after the confirmations of the whole batch went
out. Each ledger batch is a materialization of the ledger asset; a downstream run is asked for when the
ledger has materialized since the batch the previous run covered. One such run at a time: the next is
asked for once the previous one ended, and it delivers everything due by then (its queries read every
PAID order without a confirmation, every unsent outbox row), so it covers all ledger batches before it
was requested. A failed run is asked for again after a backoff, even when the ledger is quiet, since
what it left undelivered waits for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from hub_pipelines.landing.batches import PendingRun, RunOutcome

RETRY_AFTER_FAILURE_SECONDS = 60.0


@dataclass(frozen=True)
class DownstreamCursor:
    """The newest ledger batch (its materialization's storage id) a requested run covers, that run's key,
    how many runs in a row failed, and when the last one was requested."""

    covered_ledger: int | None = None
    run_key: str | None = None
    failures: int = 0
    requested_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "covered_ledger": self.covered_ledger,
                "run_key": self.run_key,
                "failures": self.failures,
                "requested_at": self.requested_at,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> DownstreamCursor:
        if not text:
            return cls()
        state = json.loads(text)
        return cls(
            covered_ledger=state.get("covered_ledger"),
            run_key=state.get("run_key"),
            failures=int(state.get("failures", 0)),
            requested_at=float(state.get("requested_at", 0.0)),
        )


@dataclass(frozen=True)
class DownstreamStep:
    """What a tick does: the run key to request (None: no run), the new cursor and why."""

    run_key: str | None
    cursor: DownstreamCursor
    reason: str


def next_downstream_step(
    cursor: DownstreamCursor, newest_ledger: int | None, previous: PendingRun, now: float
) -> DownstreamStep:
    """The next downstream run, given the newest ledger materialization's storage id and how the run the
    cursor names ended."""
    if previous.outcome == RunOutcome.IN_FLIGHT:
        return DownstreamStep(None, cursor, f"downstream run {cursor.run_key} in flight")
    failures = cursor.failures + 1 if previous.outcome == RunOutcome.FAILED else 0
    if failures and now - cursor.requested_at < RETRY_AFTER_FAILURE_SECONDS:
        return DownstreamStep(
            None,
            cursor,
            f"downstream run {cursor.run_key} failed ({previous.error or 'no error recorded'}); "
            f"asking again {RETRY_AFTER_FAILURE_SECONDS:.0f} s after it was requested",
        )
    fresh = newest_ledger is not None and (
        cursor.covered_ledger is None or newest_ledger > cursor.covered_ledger
    )
    if not fresh and not failures:
        return DownstreamStep(
            None, replace(cursor, failures=0), f"no ledger batch since #{cursor.covered_ledger}"
        )
    covered = newest_ledger if fresh else cursor.covered_ledger
    run_key = f"orders-downstream/{covered}" + (f"#{failures}" if failures else "")
    step_cursor = DownstreamCursor(covered, run_key, failures, now)
    why = f"ledger batch #{covered}" + (f", after {failures} failed run(s)" if failures else "")
    return DownstreamStep(run_key, step_cursor, why)
