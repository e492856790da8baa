"""The topic sensors' bookkeeping: which offset ranges are landed, which run is landing the next ones.

What is landed is learned from every writer, not only from the sensor's own runs: the CLI, the UI, a
backfill or a run retry may land ranges too, and each landing says which ranges it landed. The cursor
folds those in (`resync`), so a range someone else landed is never asked for again and the next batch
starts past it. At most one landing run per lane of a topic (`lanes.py`) is in flight, so each
partition is landed in order.

A failed run's ranges that nobody landed meanwhile are asked for again under a new run key, after a
backoff that doubles up to a cap. A range that failed `STUCK_AFTER_FAILURES` times is stuck: the tick
that sees it says so once (the sensor pages), and every later skip reason says so until it lands.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from hub_pipelines.landing.offsets import (
    OffsetRange,
    RewoundPartition,
    describe_ranges,
    parse_ranges,
    plan_next_ranges,
    rewound_partitions,
    uncovered_parts,
)

STUCK_AFTER_FAILURES = 3
RETRY_BACKOFF_SECONDS = 10.0
RETRY_BACKOFF_CAP_SECONDS = 300.0
ERROR_CHARS = 300
# The metadata key under which a following landing reports the book's landed position per partition
# (JSON: {"partition": offset}) with each micro-batch.
BOOK_POSITIONS_METADATA = "landed_positions"


class RunOutcome(enum.Enum):
    IN_FLIGHT = "in flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"


@dataclass(frozen=True)
class PendingRun:
    """How the run in flight ended, and its first error when it failed."""

    outcome: RunOutcome
    error: str = ""
    run_id: str | None = None
    # When its process started (seconds since the epoch); None until then.
    started_at: float | None = None


def format_book_positions(positions: Mapping[int, int]) -> str:
    """Book positions as a landing reports them under BOOK_POSITIONS_METADATA."""
    return json.dumps({str(p): end for p, end in sorted(positions.items())})


def parse_book_positions(text: str) -> dict[int, int]:
    """The book positions a landing reported under BOOK_POSITIONS_METADATA; ValueError when unreadable."""
    try:
        return {int(p): int(end) for p, end in json.loads(text).items()} if text else {}
    except (TypeError, AttributeError) as unreadable:
        raise ValueError(f"book positions {text!r} are unreadable") from unreadable


@dataclass(frozen=True)
class Landing:
    """Ranges one run reported landed; `by_other_writer` when that run was not the sensor's own, so
    the work downstream of the landing (the ledger, the counters) has not run for them yet.

    `book_positions`, when the run reported them, are the book's landed position per partition as the
    run read it: every offset below is booked, since a lane lands its partitions in order and a
    follower plans from that position (the `landed_offsets_contiguous` check guards it). They close
    what a lost report would leave open: a micro-batch booked whose materialization never reached
    the instance (its run killed between the two; in chaos seed 31 the run went on, around a
    PostgreSQL restart) is reported by no one, since later batches and successors plan from the book. Without them the sensor's cursor kept that hole for good, saw messages
    waiting below the topic's end, and requested a successor for every window of a drained topic.
    """

    ranges: tuple[OffsetRange, ...]
    by_other_writer: bool
    book_positions: Mapping[int, int] = field(default_factory=dict)

    def booked(self) -> tuple[OffsetRange, ...]:
        """The ranges reported, and what the book held landed from each partition's start."""
        return (*self.ranges, *(OffsetRange(p, 0, end) for p, end in self.book_positions.items()))


@dataclass(frozen=True)
class TopicCursor:
    landed: dict[int, int] = field(default_factory=dict)
    pending_run_key: str | None = None
    pending_ranges: tuple[OffsetRange, ...] = ()
    attempt: int = 0
    # Ranges landed past a partition's landed offset, with a gap before them (CLI runs with explicit ranges).
    landed_ahead: tuple[OffsetRange, ...] = ()
    last_landing_seen: int | None = None
    retry_at: float | None = None
    last_error: str = ""
    # Other writers landed ranges whose downstream steps no run of the sensor has carried yet.
    downstream_behind: bool = False
    # Partitions held since their end fell below their landed offset: partition -> (landed, end seen).
    rewound: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        """Failures of the pending ranges so far, counting the pending run once it has failed."""
        return self.attempt + (1 if self.retry_at is not None else 0)

    def rewound_partitions(self, topic: str) -> list[RewoundPartition]:
        return [RewoundPartition(topic, p, landed, end) for p, (landed, end) in sorted(self.rewound.items())]

    def to_json(self) -> str:
        return json.dumps(
            {
                "landed": {str(p): o for p, o in sorted(self.landed.items())},
                "pending_run_key": self.pending_run_key,
                "pending_ranges": describe_ranges(self.pending_ranges),
                "attempt": self.attempt,
                "landed_ahead": describe_ranges(self.landed_ahead),
                "last_landing_seen": self.last_landing_seen,
                "retry_at": self.retry_at,
                "last_error": self.last_error,
                "downstream_behind": self.downstream_behind,
                "rewound": {str(p): list(seen) for p, seen in sorted(self.rewound.items())},
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
            landed_ahead=tuple(parse_ranges(data.get("landed_ahead", ""))),
            last_landing_seen=data.get("last_landing_seen"),
            retry_at=data.get("retry_at"),
            last_error=data.get("last_error", ""),
            downstream_behind=bool(data.get("downstream_behind", False)),
            rewound={int(p): (int(landed), int(end)) for p, (landed, end) in data.get("rewound", {}).items()},
        )


@dataclass(frozen=True)
class StuckRange:
    """Ranges of a topic that failed to land STUCK_AFTER_FAILURES times in a row."""

    topic: str
    ranges: tuple[OffsetRange, ...]
    failures: int
    last_error: str

    @property
    def dedup_key(self) -> str:
        return f"stuck-range/{self.topic}/{describe_ranges(self.ranges)}"

    def describe(self) -> str:
        return (
            f"{self.topic} {describe_ranges(self.ranges)} is stuck: failed {self.failures} times, "
            f"last error: {self.last_error or 'unknown'}"
        )


@dataclass(frozen=True)
class RequestLanding:
    """Start a landing run for these ranges; a successor (`takes_over_from` a following run) has none
    and plans from the book."""

    run_key: str
    ranges: tuple[OffsetRange, ...]
    cursor: TopicCursor
    note: str
    takes_over_from: str | None = None


@dataclass(frozen=True)
class Wait:
    """Nothing to start this tick; the reason is shown in the UI. `newly_stuck` is set on the one
    tick that sees a range fail for the STUCK_AFTER_FAILURES-th time."""

    reason: str
    cursor: TopicCursor
    newly_stuck: StuckRange | None = None


def run_key_for(topic: str, ranges: tuple[OffsetRange, ...], attempt: int) -> str:
    return f"{topic}:{describe_ranges(ranges)}#{attempt}"


def retry_backoff_seconds(failures: int) -> float:
    return min(RETRY_BACKOFF_CAP_SECONDS, RETRY_BACKOFF_SECONDS * 2 ** max(0, failures - 1))


def resync(cursor: TopicCursor, landings: Iterable[Landing], last_landing_seen: int | None) -> TopicCursor:
    """The cursor after folding in ranges landed by any writer, up to the landing `last_landing_seen`."""
    landings = list(landings)
    landed, ahead = _fold(cursor.landed, cursor.landed_ahead, (r for x in landings for r in x.booked()))
    return replace(
        cursor,
        landed=landed,
        landed_ahead=ahead,
        last_landing_seen=last_landing_seen if last_landing_seen is not None else cursor.last_landing_seen,
        downstream_behind=cursor.downstream_behind
        or any(x.by_other_writer and any(r.size for r in x.ranges) for x in landings),
    )


def next_landing_step(
    topic: str,
    cursor: TopicCursor,
    end_offsets: Mapping[int, int],
    pending: PendingRun | None,
    max_messages: int,
    now: float,
    hand_over_after: float | None = None,
) -> RequestLanding | Wait:
    """Decide this tick: wait for the run in flight, retry what it left unlanded, or request the next batch.

    With `hand_over_after`, a run in flight that started that long ago is a follower near its window's
    end: while messages wait past what it landed, its successor is requested now (landing/handoff.py)
    and becomes the lane's pending run. What
    the follower lands is folded in from its materializations like any landing, and what it leaves
    (killed, failed) the successor lands, since it plans from the book.
    """
    if cursor.pending_run_key is not None:
        pending = pending or PendingRun(RunOutcome.MISSING)
        if pending.outcome is RunOutcome.IN_FLIGHT:
            if (
                hand_over_after is not None
                and pending.run_id is not None
                and pending.started_at is not None
                and now >= pending.started_at + hand_over_after
                and _messages_pending(cursor, end_offsets)
            ):
                return _successor(topic, cursor, pending.run_id)
            return Wait(_in_flight_reason(topic, cursor), cursor)
        if pending.outcome is RunOutcome.SUCCEEDED:
            landed, ahead = _fold(cursor.landed, cursor.landed_ahead, cursor.pending_ranges)
            cursor = TopicCursor(
                landed,
                landed_ahead=ahead,
                last_landing_seen=cursor.last_landing_seen,
                downstream_behind=cursor.downstream_behind,
                rewound=cursor.rewound,
            )
        else:
            step = _after_failure(topic, cursor, pending, now)
            if step is not None:
                return step
            # Every failed range was landed meanwhile (by that run before it failed, or by another
            # writer); only the steps after the landing are left, and the next run carries them.
            cursor = TopicCursor(
                cursor.landed,
                landed_ahead=cursor.landed_ahead,
                last_landing_seen=cursor.last_landing_seen,
                downstream_behind=True,
                rewound=cursor.rewound,
            )

    ranges = tuple(plan_next_ranges(cursor.landed, _plannable_ends(cursor, end_offsets), max_messages))
    note = ""
    if ranges:
        backlog = sum(
            end - cursor.landed.get(p, 0) for p, end in _plannable_ends(cursor, end_offsets).items()
        )
        note = f"{sum(r.size for r in ranges)} of {backlog} pending messages"
    elif cursor.downstream_behind:
        # An empty range at each landed offset: the run lands nothing and carries what other writers
        # landed through the steps after the landing.
        ranges = tuple(OffsetRange(p, o, o) for p, o in sorted(cursor.landed.items()))
        note = "other writers landed ranges; carrying them through the steps after the landing"
    if not ranges:
        positions = ", ".join(f"p{p}@{o}" for p, o in sorted(end_offsets.items())) or "no partitions"
        return Wait(f"no new messages on {topic} ({positions})", cursor)
    run_key = run_key_for(topic, ranges, 0)
    requested = TopicCursor(
        cursor.landed,
        run_key,
        ranges,
        landed_ahead=cursor.landed_ahead,
        last_landing_seen=cursor.last_landing_seen,
        rewound=cursor.rewound,
    )
    return RequestLanding(run_key, ranges, requested, note)


def hold_rewound(
    topic: str, cursor: TopicCursor, end_offsets: Mapping[int, int]
) -> tuple[TopicCursor, list[RewoundPartition]]:
    """The cursor holding every partition whose end fell below its landed offset, and those newly held.

    A held partition stays held when it grows past that offset again (its new messages would be
    skipped from there on); the operator releases it (docs/operations.md)."""
    found = rewound_partitions(
        topic, cursor.landed, {p: end for p, end in end_offsets.items() if p not in cursor.rewound}
    )
    if not found:
        return cursor, []
    return replace(
        cursor, rewound={**cursor.rewound, **{r.partition: (r.landed, r.end) for r in found}}
    ), found


def _successor(topic: str, cursor: TopicCursor, run_id: str) -> RequestLanding:
    run_key = f"{topic}:after {run_id}#0"
    successor = TopicCursor(
        cursor.landed,
        run_key,
        landed_ahead=cursor.landed_ahead,
        last_landing_seen=cursor.last_landing_seen,
        rewound=cursor.rewound,
    )
    return RequestLanding(run_key, (), successor, f"taking over from run {run_id}", takes_over_from=run_id)


def _after_failure(
    topic: str, cursor: TopicCursor, pending: PendingRun, now: float
) -> RequestLanding | Wait | None:
    """Wait out the backoff, then request what the failed run left unlanded; None when nothing is left."""
    if all(r.size == 0 for r in cursor.pending_ranges):
        # A run that carried landed messages downstream failed there: the same run is needed again.
        unlanded = cursor.pending_ranges
    else:
        # A held partition's new messages past the failed range would be landed while those below it
        # are skipped (`hold_rewound`).
        unlanded = tuple(
            part
            for r in cursor.pending_ranges
            if r.partition not in cursor.rewound
            for part in _unlanded(r, cursor.landed, cursor.landed_ahead)
        )
    if not unlanded:
        return None
    newly_stuck = None
    if cursor.retry_at is None:
        error = (
            pending.error if pending.outcome is RunOutcome.FAILED else "no run with this run key was found"
        )
        cursor = replace(
            cursor,
            retry_at=now + retry_backoff_seconds(cursor.attempt + 1),
            last_error=_first_line(error),
        )
        if cursor.failures == STUCK_AFTER_FAILURES:
            newly_stuck = _stuck(topic, cursor)
    if now < (cursor.retry_at or now):
        return Wait(_backoff_reason(topic, cursor, unlanded), cursor, newly_stuck)
    attempt = cursor.attempt + 1
    run_key = run_key_for(topic, unlanded, attempt)
    retry = replace(cursor, pending_run_key=run_key, pending_ranges=unlanded, attempt=attempt, retry_at=None)
    return RequestLanding(
        run_key,
        unlanded,
        retry,
        f"run {cursor.pending_run_key} {pending.outcome.value} ({cursor.last_error}): "
        f"requesting {describe_ranges(unlanded)} again",
    )


def _stuck(topic: str, cursor: TopicCursor) -> StuckRange:
    return StuckRange(topic, cursor.pending_ranges, cursor.failures, cursor.last_error)


def _in_flight_reason(topic: str, cursor: TopicCursor) -> str:
    reason = f"landing run {cursor.pending_run_key} for {describe_ranges(cursor.pending_ranges)} is still in flight"
    if cursor.attempt >= STUCK_AFTER_FAILURES:
        reason += f"; {_stuck(topic, cursor).describe()}"
    return reason


def _backoff_reason(topic: str, cursor: TopicCursor, unlanded: tuple[OffsetRange, ...]) -> str:
    at = datetime.fromtimestamp(cursor.retry_at or 0, UTC).strftime("%H:%M:%S UTC")
    retry = f"retrying {describe_ranges(unlanded)} at {at}"
    if cursor.failures >= STUCK_AFTER_FAILURES:
        return f"{_stuck(topic, cursor).describe()}; {retry}"
    return (
        f"landing run {cursor.pending_run_key} for {describe_ranges(cursor.pending_ranges)} failed "
        f"({cursor.last_error or 'unknown error'}); {retry}"
    )


def _first_line(error: str) -> str:
    lines = error.strip().splitlines()
    return lines[0][:ERROR_CHARS] if lines else ""


def _fold(
    landed: Mapping[int, int], ahead: Sequence[OffsetRange], ranges: Iterable[OffsetRange]
) -> tuple[dict[int, int], tuple[OffsetRange, ...]]:
    """Landed offsets and the ranges still ahead of them, after adding `ranges` (overlaps are fine)."""
    by_partition: dict[int, list[OffsetRange]] = {}
    for r in [*ahead, *ranges]:
        if r.size:
            by_partition.setdefault(r.partition, []).append(r)
    folded = dict(landed)
    still_ahead: list[OffsetRange] = []
    for partition, partition_ranges in by_partition.items():
        position = folded.get(partition, 0)
        for r in sorted(partition_ranges):
            if r.start <= position:
                position = max(position, r.end)
            elif still_ahead and still_ahead[-1].partition == partition and r.start <= still_ahead[-1].end:
                last = still_ahead.pop()
                still_ahead.append(OffsetRange(partition, last.start, max(last.end, r.end)))
            else:
                still_ahead.append(r)
        if position:
            folded[partition] = position
    return folded, tuple(sorted(still_ahead))


def _unlanded(r: OffsetRange, landed: Mapping[int, int], ahead: Sequence[OffsetRange]) -> list[OffsetRange]:
    """The parts of `r` that neither the landed offset nor a range landed ahead covers."""
    start = max(r.start, landed.get(r.partition, 0))
    if start >= r.end:
        return []
    return uncovered_parts(OffsetRange(r.partition, start, r.end), ahead)


def _messages_pending(cursor: TopicCursor, end_offsets: Mapping[int, int]) -> bool:
    """Whether the topic holds messages past what the cursor has landed (the follower's micro-batches
    folded in). A quiet topic's follower gets no successor: it ends at its window, a drained system
    holds no run, and the next message is requested the usual way."""
    return any(end > cursor.landed.get(p, 0) for p, end in _plannable_ends(cursor, end_offsets).items())


def _plannable_ends(cursor: TopicCursor, end_offsets: Mapping[int, int]) -> dict[int, int]:
    """Each partition's end offset, or the start of the first range landed ahead, whichever is first;
    none for a partition held since it was rewound."""
    ends = {p: end for p, end in end_offsets.items() if p not in cursor.rewound}
    for r in cursor.landed_ahead:
        if r.partition in ends:
            ends[r.partition] = min(ends[r.partition], r.start)
    return ends
