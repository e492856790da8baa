"""The follow loop on a clock it is given: what it lands, in which order, and when it stops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.following import LandedBatch, MicroBatch, follow_topic
from hub_pipelines.landing.offsets import OffsetRange


@dataclass
class ScriptedTopic:
    """End offsets that grow at given times of a clock that moves only when the follower sleeps."""

    arrivals: list[tuple[float, int, int]]  # (at, partition, new end)
    now: float = 0.0
    polls: list[float] = field(default_factory=list)
    reported_at: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def end_offsets(self, topic: str) -> dict[int, int]:
        self.polls.append(self.now)
        ends = {0: 10, 1: 10}
        for at, partition, end in self.arrivals:
            if at <= self.now:
                ends[partition] = end
        return ends

    def land(self, ranges: tuple[OffsetRange, ...]) -> LandedBatch:
        self.now += 0.25
        return LandedBatch(LandingCounts(read=sum(r.size for r in ranges)))


FIRST = (OffsetRange(0, 0, 10), OffsetRange(1, 0, 10))


def _follow(
    topic: ScriptedTopic,
    follow_seconds: float,
    first: tuple[OffsetRange, ...] = FIRST,
    landed_positions: dict[int, int] | None = None,
    **options: Any,
) -> tuple[list[MicroBatch], MicroBatch]:
    """The batches reported while following (each at `topic.reported_at`), and the last one."""
    reported: list[MicroBatch] = []

    def report(batch: MicroBatch) -> None:
        reported.append(batch)
        topic.reported_at.append(topic.now)

    last = follow_topic(
        topic,  # type: ignore[arg-type]
        "events",
        first,
        landed_positions or {},
        topic.land,
        report,
        follow_seconds,
        poll_seconds=1.0,
        max_messages=1000,
        clock=topic.clock,
        sleep=topic.sleep,
        **options,
    )
    return reported, last


def _landed(reported: list[MicroBatch], last: MicroBatch) -> list[OffsetRange]:
    return [r for batch in [*reported, last] for r in batch.ranges]


def test_without_follow_seconds_the_ranges_land_once_and_the_topic_is_not_polled():
    topic = ScriptedTopic(arrivals=[(0.0, 0, 50)])
    reported, last = _follow(topic, 0)
    assert reported == [] and last.ranges == (OffsetRange(0, 0, 10), OffsetRange(1, 0, 10))
    assert topic.polls == []


def test_follower_lands_arrivals_in_order_once_each_and_stops_after_its_time():
    topic = ScriptedTopic(arrivals=[(1.5, 0, 14), (3.2, 1, 17), (3.2, 0, 20)])
    reported, last = _follow(topic, 5)
    batches = [*reported, last]

    assert [b.ranges for b in batches] == [
        (OffsetRange(0, 0, 10), OffsetRange(1, 0, 10)),
        (OffsetRange(0, 10, 14),),
        (OffsetRange(0, 14, 20), OffsetRange(1, 10, 17)),
        (),
    ]
    assert [b.landed.counts.read for b in batches] == [20, 4, 13, 0]
    # One poll a second from the first batch's start, and a last one when the 5 s after it are up.
    assert topic.polls == [1.0, 2.0, 3.0, 4.0, 5.0, 5.25]


def test_each_batch_is_reported_as_soon_as_it_has_landed_not_when_the_next_arrives():
    topic = ScriptedTopic(arrivals=[(3.2, 0, 12)])
    _follow(topic, 5)
    # Landed at 0.25 (first batch) and 4.25 (the arrival, found by the poll at 4.0).
    assert topic.reported_at == [0.25, 4.25]


def test_each_batch_of_a_follower_names_where_the_book_stands_in_its_own_partitions():
    topic = ScriptedTopic(arrivals=[(1.5, 0, 14), (3.2, 0, 20)])
    reported, last = _follow(
        topic, 5, (OffsetRange(0, 5, 10),), {0: 5, 1: 10}, follows=lambda partition: partition == 0
    )
    # Partition 1 is another lane's: its position is that lane's to report.
    assert [batch.positions for batch in [*reported, last]] == [{0: 10}, {0: 14}, {0: 20}, {0: 20}]


def test_ranges_landed_without_following_name_no_book_position():
    _, last = _follow(ScriptedTopic(arrivals=[]), 0, landed_positions={0: 10})
    assert last.positions == {}


def test_follower_of_one_lane_never_lands_the_partitions_of_another_lane():
    topic = ScriptedTopic(arrivals=[(1.5, 0, 14), (1.5, 1, 17), (3.2, 0, 20)])
    landed = _landed(
        *_follow(topic, 5, (OffsetRange(0, 0, 10),), {1: 10}, follows=lambda partition: partition % 2 == 0)
    )
    assert landed == [OffsetRange(0, 0, 10), OffsetRange(0, 10, 14), OffsetRange(0, 14, 20)]


def _follow_longer(topic: ScriptedTopic, keep_following: list[bool]) -> list[OffsetRange]:
    """Follow 5 s windows up to 12 s; `keep_following` answers the follower at each window's end."""
    answers = iter(keep_following)
    return _landed(*_follow(topic, 5, longest_seconds=12, keep_following=lambda: next(answers)))


def test_follower_whose_time_is_up_follows_on_while_nothing_waits_up_to_its_longest():
    topic = ScriptedTopic(arrivals=[(3.5, 0, 12), (7.5, 0, 14), (11.5, 1, 13), (12.8, 0, 30)])
    landed = _follow_longer(topic, [True, True])
    assert landed == [
        OffsetRange(0, 0, 10),
        OffsetRange(1, 0, 10),
        OffsetRange(0, 10, 12),
        OffsetRange(0, 12, 14),
        OffsetRange(1, 10, 13),
    ]
    # Windows end at 5.25 and 10.25, each having landed in its second half; the third is cut at the
    # longest, 12.25 after the first batch.
    assert topic.polls[-1] == 12.25


def test_follower_whose_window_landed_only_in_its_first_half_stops_at_its_end_though_nothing_waits():
    # A retried run's first ranges, or a burst's tail: the topic has been quiet for over half a window.
    topic = ScriptedTopic(arrivals=[(1.5, 0, 14), (7.0, 0, 20)])
    landed = _follow_longer(topic, [True, True])
    assert landed == [OffsetRange(0, 0, 10), OffsetRange(1, 0, 10), OffsetRange(0, 10, 14)]
    assert topic.polls[-1] == 5.25


def test_follower_of_a_topic_quiet_for_a_window_stops_though_nothing_waits():
    topic = ScriptedTopic(arrivals=[(3.5, 0, 12), (11.0, 0, 14)])
    landed = _follow_longer(topic, [True, True])
    # The second window (5.25-10.25) lands nothing: the run ends, the sensor starts the next one.
    assert landed == [OffsetRange(0, 0, 10), OffsetRange(1, 0, 10), OffsetRange(0, 10, 12)]
    assert topic.polls[-1] == 10.25


def test_follower_stops_when_its_time_is_up_and_another_run_waits():
    topic = ScriptedTopic(arrivals=[(7.5, 0, 14)])
    landed = _follow_longer(topic, [False])
    assert landed == [OffsetRange(0, 0, 10), OffsetRange(1, 0, 10)]
    assert topic.polls[-1] == 5.25


def test_follower_stops_at_its_next_poll_once_its_successor_is_up_and_lands_nothing_more():
    topic = ScriptedTopic(arrivals=[(1.5, 0, 14), (3.5, 0, 20)])
    reported, last = _follow(topic, 30, relieved=lambda: topic.now >= 3.0)
    # The arrival at 3.5 is the successor's: it plans from the book once this run has ended.
    assert _landed(reported, last) == [OffsetRange(0, 0, 10), OffsetRange(1, 0, 10), OffsetRange(0, 10, 14)]
    assert last.ranges == ()
    assert topic.polls[-1] < 4.0


def test_follower_whose_successor_is_on_its_way_follows_on_though_its_topic_is_quiet_and_others_wait():
    topic = ScriptedTopic(arrivals=[(11.0, 0, 14)])
    landed = _landed(
        *_follow(topic, 5, longest_seconds=12, keep_following=lambda: False, successor_coming=lambda: True)
    )
    # Nothing arrived in the second window and another run waits for the warehouse, yet the follower
    # waits for its successor, which lets that run go first.
    assert landed == [OffsetRange(0, 0, 10), OffsetRange(1, 0, 10), OffsetRange(0, 10, 14)]
    assert topic.polls[-1] == 12.25


def test_a_partition_whose_end_falls_below_its_position_is_named_once_and_never_landed_past_it():
    # The topic is deleted and made again at 1.5 s: partition 0 starts over and grows past 10 again.
    topic = ScriptedTopic(arrivals=[(1.5, 0, 3), (1.5, 1, 0), (2.5, 1, 4), (3.5, 0, 30)])
    rewound = []
    reported, last = _follow(topic, 5, on_rewound=rewound.append)
    assert [(r.partition, r.landed, r.end) for r in rewound] == [(0, 10, 3), (1, 10, 0)]
    assert (
        rewound[0]
        .describe()
        .startswith("events partition 0 ends at offset 3, below offset 10 already landed")
    )
    assert _landed(reported, last) == list(FIRST)
    # Where its book stands is the sensor's to settle once a partition is rewound: no position is named.
    assert last.positions == {}


def test_each_poll_lends_first_and_what_arrived_during_a_loan_lands_right_after_it():
    topic = ScriptedTopic(arrivals=[(3.0, 0, 14)])
    lent_at: list[float] = []

    def lend() -> None:
        lent_at.append(topic.now)
        if topic.now == 2.0:
            topic.now += 10.0  # a borrower holds the warehouse for 10 s, past the window's end

    reported, last = _follow(topic, 5, between_batches=lend)

    assert lent_at == [1.0, 2.0]
    assert topic.polls == [1.0, 12.0]
    assert last.ranges == (OffsetRange(0, 10, 14),)
    assert [b.ranges for b in reported] == [FIRST]
