"""Lanes: a topic's partitions split into groups that land and are processed side by side.

Partition p belongs to lane p % lanes. The rule needs no table and holds for partitions added to the
topic later. Each lane has its own cursor, its own landing run in flight and its own run keys, so N
lanes are N runs (N pods under the K8sRunLauncher) and each partition still lands in order: only its
lane's run lands it.

The number of lanes may change on a running deployment. The lanes' cursors are then merged by
partition and split by the new rule; the runs the old lanes have in flight are kept as draining runs,
and no new lane plans a partition a draining run holds until that run ends. What a draining run
landed is folded in when it succeeds (the materializations say so too); when it failed, the new lanes
plan its ranges from their landed offsets and carry what it may have landed through the steps after
the landing. Retry backoffs and failure counts start again under the new lanes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from hub_pipelines.landing.batches import (
    Landing,
    PendingRun,
    RequestLanding,
    RunOutcome,
    TopicCursor,
    Wait,
    hold_rewound,
    next_landing_step,
    resync,
)
from hub_pipelines.landing.offsets import OffsetRange, RewoundPartition, describe_ranges, parse_ranges

# The run queue admits one run per value of LANE_TAG, and two per value of FOLLOWING_LANE_TAG: a
# following lane's run and the successor that takes over from it (handoff.py).
LANE_TAG = "hub/lane"
FOLLOWING_LANE_TAG = "hub/following-lane"


# Longer than the clients' own retries (30 s) and a broker's rolling restart.
UNREADABLE_PAGE_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class Lane:
    """Lane `index` of a topic split into `count` lanes: the partitions p with p % count == index."""

    topic: str
    index: int
    count: int

    def holds(self, partition: int) -> bool:
        return partition % self.count == self.index

    @property
    def name(self) -> str:
        """Names the lane in run keys, skip reasons and stuck-range pages; a topic in one lane is
        named by the topic alone, as before lanes."""
        return self.topic if self.count == 1 else f"{self.topic}/{self.index}of{self.count}"

    @property
    def tag(self) -> str:
        """The lane's run tag value (LANE_TAG, or FOLLOWING_LANE_TAG for a following lane)."""
        return f"{self.topic}/{self.index}"


def lanes_of(topic: str, count: int) -> list[Lane]:
    if count < 1:
        raise ValueError(f"topic {topic}: the number of lanes must be at least 1, not {count}")
    return [Lane(topic, index, count) for index in range(count)]


@dataclass(frozen=True)
class DrainingRun:
    """A landing run requested under an earlier number of lanes, maybe still in flight."""

    run_key: str
    ranges: tuple[OffsetRange, ...]


@dataclass(frozen=True)
class TopicUnreadable:
    """The sensor has not been able to read the topic's end offsets since `since` (a broker away for
    longer than its clients' retries, the topic deleted, credentials refused): no lane plans, and only
    a page tells anyone, since nothing fails."""

    topic: str
    since: float
    error: str
    paged: bool = False

    @property
    def dedup_key(self) -> str:
        return f"topic-unreadable/{self.topic}"

    def describe(self, now: float) -> str:
        return (
            f"cannot read the end offsets of {self.topic} for {(now - self.since) / 60:.0f} min: {self.error}"
        )


@dataclass(frozen=True)
class LaneCursors:
    """The topic sensor's cursor: one `TopicCursor` per lane, the runs of earlier lanes, and since
    when the topic cannot be read."""

    lanes: tuple[TopicCursor, ...] = (TopicCursor(),)
    draining: tuple[DrainingRun, ...] = ()
    unreadable: TopicUnreadable | None = None

    @property
    def last_landing_seen(self) -> int | None:
        return self.lanes[0].last_landing_seen

    def held_partitions(self) -> list[int]:
        """The partitions held since they were rewound, in every lane."""
        return sorted(p for c in self.lanes for p in c.rewound)

    def run_keys(self) -> list[str]:
        """The run keys whose outcome the next tick needs."""
        keys = [c.pending_run_key for c in self.lanes if c.pending_run_key is not None]
        return keys + [run.run_key for run in self.draining]

    def to_json(self) -> str:
        """JSON; a topic in one lane with nothing draining keeps the cursor it had before lanes."""
        unreadable = (
            {}
            if self.unreadable is None
            else {"unreadable": {k: v for k, v in vars(self.unreadable).items() if k != "topic"}}
        )
        if len(self.lanes) == 1 and not self.draining:
            return json.dumps({**json.loads(self.lanes[0].to_json()), **unreadable})
        return json.dumps(
            {
                "lanes": [json.loads(c.to_json()) for c in self.lanes],
                "draining": {run.run_key: describe_ranges(run.ranges) for run in self.draining},
                **unreadable,
            }
        )

    @classmethod
    def from_json(cls, text: str | None, topic: str = "") -> LaneCursors:
        """The cursor; a cursor written before lanes (one `TopicCursor`) is one lane."""
        if not text:
            return cls()
        data = json.loads(text)
        seen = data.get("unreadable")
        unreadable = (
            None
            if seen is None
            else TopicUnreadable(topic, float(seen["since"]), str(seen["error"]), bool(seen["paged"]))
        )
        if "lanes" not in data:
            return cls((TopicCursor.from_json(text),), unreadable=unreadable)
        return cls(
            tuple(TopicCursor.from_json(json.dumps(lane)) for lane in data["lanes"]),
            tuple(DrainingRun(key, tuple(parse_ranges(r))) for key, r in data.get("draining", {}).items()),
            unreadable,
        )

    def unreadable_at(self, topic: str, error: str, now: float) -> tuple[LaneCursors, TopicUnreadable | None]:
        """The cursor after a tick that could not read the topic, and the state to page about when it
        has been unreadable for UNREADABLE_PAGE_AFTER_SECONDS (once until it is read again)."""
        since = self.unreadable.since if self.unreadable is not None else now
        unreadable = TopicUnreadable(
            topic, since, error, self.unreadable is not None and self.unreadable.paged
        )
        page = not unreadable.paged and now - since >= UNREADABLE_PAGE_AFTER_SECONDS
        if page:
            unreadable = replace(unreadable, paged=True)
        return replace(self, unreadable=unreadable), unreadable if page else None


def relane(cursors: LaneCursors, count: int) -> LaneCursors:
    """The cursor split into `count` lanes; the same cursor when it already has that many."""
    if len(cursors.lanes) == count:
        return cursors
    landed = {p: o for c in cursors.lanes for p, o in c.landed.items()}
    ahead = [r for c in cursors.lanes for r in c.landed_ahead]
    behind = any(c.downstream_behind for c in cursors.lanes)
    rewound = {p: seen for c in cursors.lanes for p, seen in c.rewound.items()}
    draining = cursors.draining + tuple(
        DrainingRun(c.pending_run_key, c.pending_ranges)
        for c in cursors.lanes
        if c.pending_run_key is not None
    )
    return LaneCursors(
        tuple(
            TopicCursor(
                {p: o for p, o in landed.items() if lane.holds(p)},
                landed_ahead=tuple(r for r in ahead if lane.holds(r.partition)),
                last_landing_seen=cursors.last_landing_seen,
                downstream_behind=behind,
                rewound={p: seen for p, seen in rewound.items() if lane.holds(p)},
            )
            for lane in lanes_of("", count)
        ),
        draining,
        cursors.unreadable,
    )


def resync_lanes(
    cursors: LaneCursors, landings: Iterable[Landing], last_landing_seen: int | None
) -> LaneCursors:
    """Each lane's cursor after folding in the ranges of its partitions that any writer landed."""
    landings = list(landings)
    count = len(cursors.lanes)
    return replace(
        cursors,
        lanes=tuple(
            resync(cursor, _in_lane(landings, Lane("", index, count)), last_landing_seen)
            for index, cursor in enumerate(cursors.lanes)
        ),
    )


@dataclass(frozen=True)
class LanesTick:
    """What one tick decided for each lane, and the cursor it leaves."""

    requests: list[tuple[Lane, RequestLanding]]
    waits: list[tuple[Lane, Wait]]
    cursor: LaneCursors = field(default_factory=LaneCursors)
    # Partitions this tick found rewound (`hold_rewound`): each is paged once.
    newly_rewound: list[RewoundPartition] = field(default_factory=list)

    def reason(self) -> str:
        """Why no lane started a run; one lane's reason alone when there is one lane."""
        if len(self.waits) == 1:
            return self.waits[0][1].reason
        return "; ".join(f"lane {lane.index}: {wait.reason}" for lane, wait in self.waits)


def next_lanes_step(
    topic: str,
    cursors: LaneCursors,
    end_offsets: Mapping[int, int],
    pending: Mapping[str, PendingRun],
    max_messages: int,
    now: float,
    hand_over_after: float | None = None,
) -> LanesTick:
    """Settle the draining runs that ended, then decide each lane's tick as one topic's
    (`next_landing_step`, which starts a following run's successor `hand_over_after` seconds after it
    started) over the lane's partitions that no draining run still holds."""
    lanes = lanes_of(topic, len(cursors.lanes))
    lane_cursors = list(cursors.lanes)
    draining = []
    for run in cursors.draining:
        outcome = pending.get(run.run_key, PendingRun(RunOutcome.MISSING)).outcome
        if outcome is RunOutcome.IN_FLIGHT:
            draining.append(run)
            continue
        for lane in lanes:
            mine = tuple(r for r in run.ranges if lane.holds(r.partition))
            if not mine:
                continue
            cursor = lane_cursors[lane.index]
            if outcome is RunOutcome.SUCCEEDED:
                lane_cursors[lane.index] = resync(cursor, [Landing(mine, by_other_writer=False)], None)
            else:
                # It may have landed some of its ranges before it failed: the steps after the
                # landing are owed for them.
                lane_cursors[lane.index] = replace(cursor, downstream_behind=True)
    held = {r.partition for run in draining for r in run.ranges}
    requests, waits, newly_rewound = [], [], []
    for lane in lanes:
        cursor, rewound = hold_rewound(
            topic, lane_cursors[lane.index], {p: end for p, end in end_offsets.items() if lane.holds(p)}
        )
        newly_rewound += rewound
        ends = {p: end for p, end in end_offsets.items() if lane.holds(p) and p not in held}
        step = next_landing_step(
            lane.name,
            cursor,
            ends,
            pending.get(cursor.pending_run_key or ""),
            max_messages,
            now,
            hand_over_after,
        )
        lane_cursors[lane.index] = step.cursor
        if isinstance(step, RequestLanding):
            requests.append((lane, step))
            continue
        blocked = sorted(p for p in end_offsets if lane.holds(p) and p in held)
        if blocked:
            step = replace(
                step, reason=f"{step.reason}; partitions {blocked} wait for runs of the earlier lanes"
            )
        for rewinding in step.cursor.rewound_partitions(topic):
            step = replace(step, reason=f"{step.reason}; {rewinding.describe()}")
        waits.append((lane, step))
    return LanesTick(requests, waits, LaneCursors(tuple(lane_cursors), tuple(draining)), newly_rewound)


def _in_lane(landings: list[Landing], lane: Lane) -> list[Landing]:
    return [
        replace(
            landing,
            ranges=tuple(r for r in landing.ranges if lane.holds(r.partition)),
            book_positions={p: end for p, end in landing.book_positions.items() if lane.holds(p)},
        )
        for landing in landings
    ]
