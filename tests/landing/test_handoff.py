"""A successor taking over: it warms up and says it is up before it waits, waits for the runs before it
only so long, and which runs it waits for; a follower's reading of the runs around it."""

from __future__ import annotations

from hub_pipelines.landing.handoff import (
    InstanceRun,
    follows_busy_topic_on,
    runs_to_let_go_first,
    successor_coming,
    take_over,
)
from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[str] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_successor_warms_up_and_announces_itself_before_waiting_until_the_runs_before_it_end():
    time = Clock()

    def waiting_for() -> list[str]:
        time.events.append("asked")
        return ["predecessor"] if time.now < 2.0 else []

    handoff = take_over(
        "predecessor",
        lambda: time.events.append("warmed up"),
        lambda: time.events.append("announced"),
        waiting_for,
        60,
        0.25,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert handoff.not_ended == [] and handoff.waited_seconds == 2.0
    assert time.events[:3] == ["warmed up", "announced", "asked"]
    assert handoff.describe() == "taking over from run predecessor after waiting 2.0 s for it to end"


def test_successor_goes_on_after_its_wait_names_the_runs_that_never_ended():
    time = Clock()
    handoff = take_over(
        "predecessor", lambda: None, lambda: None, lambda: ["killed-run"], 5, 0.25, time.clock, time.sleep
    )
    assert handoff.not_ended == ["killed-run"]
    assert time.now == 5.0
    assert "runs killed-run had not ended after 5 s; going on" in handoff.describe()


LANE = {FOLLOWING_LANE_TAG: "events/0"}
ROLLUPS = {"hub/workflow": "analytics"}


def test_successor_waits_for_an_unfinished_predecessor_only():
    """Runs waiting for chdb borrow it from the follower at its poll; the successor need not wait for them."""
    assert runs_to_let_go_first(InstanceRun("follower", "STARTED", LANE)) == ["follower"]
    assert runs_to_let_go_first(InstanceRun("follower", "FAILURE", LANE)) == []
    assert runs_to_let_go_first(None) == []


def test_only_a_successor_that_left_the_queue_counts_as_coming():
    assert not successor_coming("events/0", lambda lane: [InstanceRun("queued", "QUEUED", LANE)])
    assert successor_coming("events/0", lambda lane: [InstanceRun("launching", "STARTING", LANE)])
    assert not successor_coming(None, lambda lane: [InstanceRun("launching", "STARTING", LANE)])


def test_busy_chdb_follower_follows_on_until_its_loans_reach_the_bound_whoever_waits():
    assert follows_busy_topic_on(True, 49, 50, others_wait=lambda: True)
    assert not follows_busy_topic_on(True, 50, 50, others_wait=lambda: False)


def test_busy_follower_of_a_server_follows_on_only_while_no_other_run_may_wait_for_its_slots():
    assert follows_busy_topic_on(False, 0, 50, others_wait=lambda: False)
    assert not follows_busy_topic_on(False, 0, 50, others_wait=lambda: True)
