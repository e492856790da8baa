"""The topic sensors' bookkeeping: which offset ranges are landed, which run is landing the next ones.

The cursor advances only when the run that landed a range succeeded; a failed run's ranges are asked
for again under a new run key. At most one landing run per topic is in flight, so each partition is
landed in order.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from hub_pipelines.landing.offsets import OffsetRange, describe_ranges, parse_ranges, plan_next_ranges


class RunOutcome(enum.Enum):
    IN_FLIGHT = "in flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"


@dataclass(frozen=True)
class TopicCursor:
    landed: dict[int, int] = field(default_factory=dict)
    pending_run_key: str | None = None
    pending_ranges: tuple[OffsetRange, ...] = ()
    attempt: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "landed": {str(p): o for p, o in sorted(self.landed.items())},
                "pending_run_key": self.pending_run_key,
                "pending_ranges": describe_ranges(self.pending_ranges),
                "attempt": self.attempt,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> TopicCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            landed={int(p): int(o) for p, o in data.get("landed", {}).items()},
            pending_run_key=data.get("pending_run_key"),
            pending_ranges=tuple(parse_ranges(data.get("pending_ranges", ""))),
            attempt=int(data.get("attempt", 0)),
        )


@dataclass(frozen=True)
class RequestLanding:
    """Start a landing run for these ranges."""

    run_key: str
    ranges: tuple[OffsetRange, ...]
    cursor: TopicCursor
    note: str


@dataclass(frozen=True)
class Wait:
    """Nothing to start this tick; the reason is shown in the UI."""

    reason: str
    cursor: TopicCursor


def run_key_for(topic: str, ranges: tuple[OffsetRange, ...], attempt: int) -> str:
    return f"{topic}:{describe_ranges(ranges)}#{attempt}"


def next_landing_step(
    topic: str,
    cursor: TopicCursor,
    end_offsets: Mapping[int, int],
    pending_outcome: RunOutcome | None,
    max_messages: int,
) -> RequestLanding | Wait:
    """Decide this tick: wait for the run in flight, retry its ranges, or request the next batch."""
    if cursor.pending_run_key is not None:
        if pending_outcome is RunOutcome.IN_FLIGHT:
            return Wait(
                f"landing run {cursor.pending_run_key} for {describe_ranges(cursor.pending_ranges)} is still in flight",
                cursor,
            )
        if pending_outcome in (RunOutcome.FAILED, RunOutcome.MISSING):
            attempt = cursor.attempt + 1
            run_key = run_key_for(topic, cursor.pending_ranges, attempt)
            retry = TopicCursor(cursor.landed, run_key, cursor.pending_ranges, attempt)
            return RequestLanding(
                run_key,
                cursor.pending_ranges,
                retry,
                f"run {cursor.pending_run_key} {pending_outcome.value}: requesting the same ranges again",
            )
        landed = dict(cursor.landed)
        for r in cursor.pending_ranges:
            landed[r.partition] = max(landed.get(r.partition, 0), r.end)
        cursor = TopicCursor(landed)

    ranges = tuple(plan_next_ranges(cursor.landed, end_offsets, max_messages))
    if not ranges:
        positions = ", ".join(f"p{p}@{o}" for p, o in sorted(end_offsets.items())) or "no partitions"
        return Wait(f"no new messages on {topic} ({positions})", cursor)
    run_key = run_key_for(topic, ranges, 0)
    backlog = sum(end - cursor.landed.get(p, 0) for p, end in end_offsets.items())
    return RequestLanding(
        run_key,
        ranges,
        TopicCursor(cursor.landed, run_key, ranges, 0),
        f"{sum(r.size for r in ranges)} of {backlog} pending messages",
    )
