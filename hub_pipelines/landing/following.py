"""Following a topic: land the requested ranges, then keep landing what arrives, in micro-batches, for a
bounded time.

A landing run costs a process start and a code location import before its first message; a run that
follows its topic pays that once for many micro-batches. Each micro-batch is planned like a sensor's
batch (from the offsets this follower landed, fairly across partitions, at most `max_messages`) and
landed through the same sink and chunk booking as any range, so a follower killed mid-batch leaves whole
chunks and the next landing counts them as duplicates. The time is bounded so the run ends: a new code
version reaches the next run, and whoever waits for the run's pool (chdb's warehouse) gets its turn.
While the topic is busy (something landed in the window's second half) and nobody waits
(`keep_following`), a window that ends is followed by another, up to `longest_seconds`: a run start
(queue, launch, warm-up) costs the events produced meanwhile tens of seconds of latency, so a busy
follower stops only for a reason. A follower whose topic has been quiet for half a window stops at its
window's end, so a drained system has no run left: a window that landed only at its start (a retried
run's first ranges, the tail of a burst) is not followed by another one.

Followers hand over (`handoff.py`): the next run of the lane is started before this one's window ends,
and once it is up this one stops at its next poll (`relieved`) instead of at its window's end; while a
successor is on its way (`successor_coming`) a window that ends is followed by another, busy or not:
stopping then would leave the topic unfollowed until the successor is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub_pipelines.core.ports import Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.latency import LandingLatency
from hub_pipelines.landing.offsets import OffsetRange, RewoundPartition, plan_next_ranges, rewound_partitions


@dataclass(frozen=True)
class LandedBatch:
    """What landing one micro-batch did, as the landing reports it."""

    counts: LandingCounts
    latency: LandingLatency | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MicroBatch:
    """One landed micro-batch of a follower, and where the book stands after it in the partitions it
    follows (`positions`, empty when not following): every offset below was booked, by this run or
    before it started, since it lands each partition in order from the book's position."""

    ranges: tuple[OffsetRange, ...]
    landed: LandedBatch
    positions: Mapping[int, int] = field(default_factory=dict)


def advance(positions: Mapping[int, int], ranges: Sequence[OffsetRange]) -> dict[int, int]:
    """Each partition's position after landing `ranges`."""
    moved = dict(positions)
    for r in ranges:
        moved[r.partition] = max(moved.get(r.partition, 0), r.end)
    return moved


def follow_topic(
    topics: Topics,
    topic: str,
    first_ranges: Sequence[OffsetRange],
    positions: Mapping[int, int],
    land: Callable[[tuple[OffsetRange, ...]], LandedBatch],
    report: Callable[[MicroBatch], None],
    follow_seconds: float,
    poll_seconds: float,
    max_messages: int,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    follows: Callable[[int], bool] = lambda partition: True,
    longest_seconds: float = 0.0,
    keep_following: Callable[[], bool] = lambda: False,
    relieved: Callable[[], bool] = lambda: False,
    successor_coming: Callable[[], bool] = lambda: False,
    on_rewound: Callable[[RewoundPartition], None] = lambda rewound: None,
    between_batches: Callable[[], None] = lambda: None,
) -> MicroBatch:
    """Land `first_ranges`, then for `follow_seconds` after that, every `poll_seconds`, whatever arrived
    past `positions` (the first ranges included) on the partitions it `follows` (its lane's: another
    lane's run lands the others). When that window ends having landed something in its second half and
    `keep_following()` says nothing waits for the follower to stop, or while `successor_coming()` says the
    run taking over is not up yet (a run waiting for the warehouse then gets it at the handoff: the
    successor lets it go first), another window follows, up to `longest_seconds` in all. Once
    `relieved()` (asked at each poll) says the successor is up, the follower stops there without landing
    more. Each batch but the last is given to `report` as soon as it has landed; the last one is
    returned (a batch with no ranges when the final polls found nothing). A partition whose end falls
    below its position (the topic deleted and made again) is given to `on_rewound` once and not landed
    again by this run.
    """
    ranges = tuple(first_ranges)
    polled = clock()
    first = land(ranges)
    position = advance(positions, ranges)
    started = clock()
    # When a batch last landed something: a window busy in its second half is followed by another.
    last_landed = started if ranges else None
    deadline = started + follow_seconds
    latest = started + max(follow_seconds, longest_seconds)
    rewound: set[int] = set()

    def micro_batch(ranges: tuple[OffsetRange, ...], result: LandedBatch) -> MicroBatch:
        if follow_seconds <= 0:
            return MicroBatch(ranges, result)
        # A rewound partition's position is above its new end: that is the sensor's to settle.
        named = {p: end for p, end in position.items() if follows(p) and p not in rewound}
        return MicroBatch(ranges, result, named)

    def following() -> bool:
        nonlocal deadline
        if clock() < deadline:
            return True
        busy = last_landed is not None and last_landed >= deadline - follow_seconds / 2
        if follow_seconds > 0 and deadline < latest and (successor_coming() or (busy and keep_following())):
            deadline = min(latest, deadline + follow_seconds)
            return True
        return False

    batch = micro_batch(ranges, first)

    while following():
        report(batch)
        ranges = ()
        while not ranges and polled < deadline:
            sleep(max(0.0, min(polled + poll_seconds, deadline) - clock()))
            polled = clock()
            if relieved():
                # The successor plans from the book once this run has ended: landing more here would
                # only make it wait longer.
                return micro_batch((), land(()))
            between_batches()
            ends = {p: end for p, end in topics.end_offsets(topic).items() if follows(p) and p not in rewound}
            for found in rewound_partitions(topic, position, ends):
                rewound.add(found.partition)
                del ends[found.partition]
                on_rewound(found)
            ranges = tuple(plan_next_ranges(position, ends, max_messages))
        # Landing nothing (the final polls found nothing) still reports where the landing stands.
        result = land(ranges)
        position = advance(position, ranges)
        if ranges:
            last_landed = clock()
        batch = micro_batch(ranges, result)
    return batch
