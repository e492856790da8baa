"""A successor taking over: it says it is up before it waits, and waits for the runs before it only so
long."""

from __future__ import annotations

from hub_pipelines.landing.handoff import take_over


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[str] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_successor_announces_itself_before_waiting_and_waits_until_the_runs_before_it_end():
    time = Clock()

    def waiting_for() -> list[str]:
        time.events.append("asked")
        return ["predecessor"] if time.now < 2.0 else []

    still = take_over(
        lambda: time.events.append("announced"), waiting_for, 60, 0.25, clock=time.clock, sleep=time.sleep
    )
    assert still == []
    assert time.events[0] == "announced"
    assert time.now == 2.0


def test_successor_goes_on_after_its_wait_names_the_runs_that_never_ended():
    time = Clock()
    still = take_over(lambda: None, lambda: ["killed-run"], 5, 0.25, clock=time.clock, sleep=time.sleep)
    assert still == ["killed-run"]
    assert time.now == 5.0
