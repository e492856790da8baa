"""Handing a followed lane from one landing run to the next, so the topic is never left unfollowed for a
run start.

The topic sensor starts the successor before the follower's window ends. The successor warms up (its
process, imports, resources), says it is up (`announce`), then waits until its predecessor has ended
(`runs_to_let_go_first`). Runs waiting for chdb's folder (a day rollup, a CLI run) need no handoff:
a follower lends them the folder at its next poll (`ChdbWarehouse.lend_to_waiting_processes`). The
predecessor hears the announcement at its next poll and stops there (`follow_topic`'s `relieved`).
The successor then plans its first batch from the book (`sink.landed_positions`), not from ranges the
sensor chose, so whatever the predecessor landed or left is accounted for exactly once, and the lane's
partitions still land in order.

The wait is bounded: a predecessor killed without its run being marked ended (run monitoring cannot
see a local run's process) is waited for `timeout` seconds at most. Going on then is safe: the chunk
booking makes any overlap land each offset once, and chdb's own folder lock, waited for when the
warehouse is opened, keeps two processes out of it.

A follower decides from the same runs whether to follow past its window: on for a successor that has
left the queue (`successor_coming`) and, against a ClickHouse server (which lends nothing), not while
another run may wait for the queue and pool slots it holds (`others_wait_for_warehouse`). The runs come
in as plain values; reading them from the Dagster instance is `assets/analytics/following_runs.py`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG

# The successor asks whether the runs before it have ended this often: one query on the run table.
HANDOFF_POLL_SECONDS = 0.25
# A successor sets this tag on its own run, naming the run it takes over from, once it is up.
TAKES_OVER_TAG = "hub/takes-over-from"
# Queued runs of these workflows never wait for the warehouse, so a follower need not stop for them.
WORKFLOWS_WITHOUT_WAREHOUSE = frozenset({"media", "orders"})
# Run statuses by their Dagster names (`DagsterRunStatus.value`).
UNFINISHED = ("NOT_STARTED", "QUEUED", "STARTING", "STARTED", "CANCELING")
LAUNCHED = frozenset({"STARTING", "STARTED"})


@dataclass(frozen=True)
class InstanceRun:
    """A run the instance holds, as the handoff sees it."""

    run_id: str
    status: str
    tags: Mapping[str, str]

    @property
    def following_lane(self) -> str | None:
        return self.tags.get(FOLLOWING_LANE_TAG)


def may_wait_for_warehouse(tags: Mapping[str, str]) -> bool:
    """Whether a run with these tags may be waiting for the warehouse a follower holds: any run but the
    media and orders workflows' (a rollup, another lane's follower, a replay, a launch from the UI or
    the CLI)."""
    return tags.get("hub/workflow") not in WORKFLOWS_WITHOUT_WAREHOUSE


def others_wait_for_warehouse(lane: str | None, others: Iterable[InstanceRun]) -> bool:
    """Whether one of the other runs, queued or started and outside this follower's lane, may wait for
    the warehouse."""
    return any(
        run.status in UNFINISHED and may_wait_for_warehouse(run.tags) and run.following_lane != lane
        for run in others
    )


def follows_busy_topic_on(
    lends_warehouse: bool, loans: int, loans_per_follower: int, others_wait: Callable[[], bool]
) -> bool:
    """Whether a follower whose window is up, having landed something in it, follows another window. On
    chdb the runs waiting for the warehouse borrow it at the follower's poll, so it follows on until its
    loans reach `loans_per_follower` (each leaves chdb's threads behind in its process); against a
    server nothing is lent, and it follows on while no other run may wait for the queue and pool slots
    it holds (`others_wait()`)."""
    if lends_warehouse:
        return loans < loans_per_follower
    return not others_wait()


def successor_coming(lane: str | None, later_runs_of: Callable[[str], Iterable[InstanceRun]]) -> bool:
    """Whether a run of this follower's lane created after it (`later_runs_of(lane)`) has left the queue
    (launching or started). One still queued may be held by the warehouse pool, which runs waiting for
    this follower's chdb fill (rollups); following on for it would keep all three waiting until
    `follow_longest_seconds`."""
    if lane is None:
        return False
    return any(run.status in LAUNCHED for run in later_runs_of(lane))


def runs_to_let_go_first(predecessor: InstanceRun | None) -> list[str]:
    """The runs a successor waits for: its predecessor, until it has ended."""
    return [predecessor.run_id] if predecessor is not None and predecessor.status in UNFINISHED else []


@dataclass(frozen=True)
class TakeOver:
    """How a successor's wait for the runs before it ended."""

    predecessor: str
    not_ended: list[str]
    waited_seconds: float

    def describe(self) -> str:
        if self.not_ended:
            return (
                f"taking over from run {self.predecessor}: runs {', '.join(self.not_ended)} had not ended "
                f"after {self.waited_seconds:.0f} s; going on (the chunk booking lands each offset once, "
                "chdb's folder lock is waited for)"
            )
        return (
            f"taking over from run {self.predecessor} after waiting {self.waited_seconds:.1f} s for it to end"
        )


def take_over(
    predecessor: str,
    warm_up: Callable[[], None],
    announce: Callable[[], None],
    waiting_for: Callable[[], list[str]],
    timeout: float,
    poll_seconds: float = HANDOFF_POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TakeOver:
    """Warm up, announce that this run is up, then wait until `waiting_for()` names no run, `timeout`
    seconds at most (counted from the announcement)."""
    warm_up()
    started = clock()
    announce()
    deadline = clock() + timeout
    pending = waiting_for()
    while pending and clock() < deadline:
        sleep(min(poll_seconds, max(0.0, deadline - clock())))
        pending = waiting_for()
    return TakeOver(predecessor, pending, clock() - started)
