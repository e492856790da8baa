"""Lanes of a topic: the lane rule, the cursor format, and a model run in which messages arrive, runs
end in any order and the number of lanes changes at any tick, while no offset is ever asked for while
it is landed or being landed, and every offset lands in the end."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.landing.batches import Landing, PendingRun, RunOutcome, TopicCursor
from hub_pipelines.landing.lanes import Lane, LaneCursors, lanes_of, next_lanes_step, relane, resync_lanes
from hub_pipelines.landing.offsets import OffsetRange

PARTITIONS = 6


def test_partition_p_belongs_to_lane_p_mod_lanes() -> None:
    lanes = lanes_of("orders", 4)
    assert [[p for p in range(10) if lane.holds(p)] for lane in lanes] == [
        [0, 4, 8],
        [1, 5, 9],
        [2, 6],
        [3, 7],
    ]
    assert [lane.tag for lane in lanes] == ["orders/0", "orders/1", "orders/2", "orders/3"]
    assert lanes[1].name == "orders/1of4" and Lane("orders", 0, 1).name == "orders"


def test_cursor_written_before_lanes_is_one_lane_and_one_lane_keeps_its_format() -> None:
    before = TopicCursor(landed={0: 5, 2: 9}, last_landing_seen=12).to_json()
    cursors = LaneCursors.from_json(before)
    assert cursors.lanes == (TopicCursor.from_json(before),)
    assert cursors.to_json() == before


def test_more_lanes_split_the_landed_offsets_by_partition() -> None:
    cursors = relane(LaneCursors((TopicCursor(landed={0: 5, 1: 7, 2: 9}, last_landing_seen=3),)), 2)
    assert [c.landed for c in cursors.lanes] == [{0: 5, 2: 9}, {1: 7}]
    assert LaneCursors.from_json(cursors.to_json()) == cursors


@dataclass
class Topic:
    """A topic, the runs the sensor asked for, and the offsets they landed."""

    ends: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(PARTITIONS), 0))
    runs: dict[str, tuple[tuple[OffsetRange, ...], RunOutcome]] = field(default_factory=dict)
    landed: set[tuple[int, int]] = field(default_factory=set)
    landings: list[Landing] = field(default_factory=list)
    # Each tick is far enough past the last that any retry backoff is over.
    now: float = 0.0

    def in_flight(self) -> set[tuple[int, int]]:
        return {
            (r.partition, o)
            for ranges, outcome in self.runs.values()
            if outcome is RunOutcome.IN_FLIGHT
            for r in ranges
            for o in range(r.start, r.end)
        }

    def tick(self, cursors: LaneCursors, lanes: int) -> LaneCursors:
        cursors = resync_lanes(relane(cursors, lanes), self.landings, len(self.landings) or None)
        pending = {key: PendingRun(self.runs[key][1]) for key in cursors.run_keys() if key in self.runs}
        self.now += 1_000
        tick = next_lanes_step("orders", cursors, self.ends, pending, 5, self.now)
        busy = self.landed | self.in_flight()
        for _, request in tick.requests:
            asked = {(r.partition, o) for r in request.ranges for o in range(r.start, r.end)}
            assert not asked & busy, f"{request.run_key} asks again for offsets landed or being landed"
            busy |= asked
            self.runs[request.run_key] = (request.ranges, RunOutcome.IN_FLIGHT)
        return tick.cursor

    def end_run(self, pick: int, succeeds: bool) -> None:
        flying = sorted(key for key, (_, outcome) in self.runs.items() if outcome is RunOutcome.IN_FLIGHT)
        if not flying:
            return
        key = flying[pick % len(flying)]
        ranges, _ = self.runs[key]
        self.runs[key] = (ranges, RunOutcome.SUCCEEDED if succeeds else RunOutcome.FAILED)
        if succeeds:
            self.landed |= {(r.partition, o) for r in ranges for o in range(r.start, r.end)}
            self.landings.append(Landing(ranges, by_other_writer=False))


actions = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.integers(0, PARTITIONS - 1), st.integers(1, 7)),
        st.tuples(st.just("tick"), st.sampled_from([1, 2, 3, 4]), st.just(0)),
        st.tuples(st.just("end"), st.integers(0, 10), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(actions, st.sampled_from([1, 2, 3, 4]))
def test_lanes_changing_under_runs_in_flight_never_ask_twice_and_land_everything(
    steps: list[tuple[str, int, int | bool]], final_lanes: int
) -> None:
    topic, cursors, lanes = Topic(), LaneCursors(), 1
    for action, a, b in steps:
        if action == "produce":
            topic.ends[a] += int(b)
        elif action == "tick":
            lanes = a
            cursors = topic.tick(cursors, lanes)
        else:
            topic.end_run(a, bool(b))
    for _ in range(200):
        topic.end_run(0, succeeds=True)
        cursors = topic.tick(cursors, final_lanes)
        if not topic.in_flight():
            cursors = topic.tick(cursors, final_lanes)
            if not topic.in_flight():
                break
    assert topic.landed == {(p, o) for p, end in topic.ends.items() for o in range(end)}


@settings(max_examples=60, deadline=None)
@given(
    recreated=st.sets(st.integers(0, PARTITIONS - 1), min_size=1),
    lane_counts=st.lists(st.integers(1, 4), min_size=2, max_size=6),
    regrowth=st.integers(0, 40),
)
def test_a_rewound_partition_is_paged_once_and_never_requested_again_across_lane_changes(
    recreated: set[int], lane_counts: list[int], regrowth: int
) -> None:
    landed = dict.fromkeys(range(PARTITIONS), 20)
    cursors = relane(LaneCursors((TopicCursor(landed=dict(landed)),)), lane_counts[0])
    # The topic made again: the recreated partitions start over below 20, then grow past it.
    ends = {p: (3 if p in recreated else 25) for p in range(PARTITIONS)}
    paged: list[int] = []
    for tick, count in enumerate(lane_counts):
        cursors = relane(LaneCursors.from_json(cursors.to_json()), count)
        for runs_end in (False, True):
            pending = {key: PendingRun(RunOutcome.SUCCEEDED) for key in cursors.run_keys() if runs_end}
            step = next_lanes_step("orders", cursors, ends, pending, 1000, float(tick))
            paged += [r.partition for r in step.newly_rewound]
            requested = {r.partition for _, request in step.requests for r in request.ranges if r.size}
            assert not requested & recreated
            cursors = step.cursor
        ends = {p: end + regrowth for p, end in ends.items()}
    assert sorted(paged) == sorted(recreated)
    assert cursors.held_partitions() == sorted(recreated)


def test_a_failed_run_is_not_asked_again_for_a_partition_rewound_meanwhile() -> None:
    cursors = LaneCursors((TopicCursor(landed={0: 20, 1: 20}),))
    step = next_lanes_step("orders", cursors, {0: 30, 1: 30}, {}, 1000, 0.0)
    [(_, request)] = step.requests
    assert request.ranges == (OffsetRange(0, 20, 30), OffsetRange(1, 20, 30))
    failed = {request.run_key: PendingRun(RunOutcome.FAILED, "step orders__order_events: IncompleteRead")}
    # The topic made again while the run was in flight: partition 0 starts over, then grows past 30.
    waiting = next_lanes_step("orders", step.cursor, {0: 2, 1: 30}, failed, 1000, 1.0)
    assert [r.partition for r in waiting.newly_rewound] == [0]
    retry = next_lanes_step("orders", waiting.cursor, {0: 40, 1: 30}, failed, 1000, 10_000.0)
    [(_, again)] = retry.requests
    assert again.ranges == (OffsetRange(1, 20, 30),)
