"""Lanes on the orders topic sensor: one run per lane, each with its lane's partitions, and a change of
the number of lanes on a running deployment (1 -> 2 -> 4, runs in flight across each change) that lands
and pays every offset exactly once."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.definitions import build_definitions
from hub_pipelines.landing.offsets import parse_ranges
from tests.platform.conftest import LocalEnvironment

SENSOR = "orders_topic_sensor"
JOB = "orders_pipeline"


def _with_lanes(env: LocalEnvironment, monkeypatch: pytest.MonkeyPatch, lanes: int) -> LocalEnvironment:
    """The environment redeployed with the orders topic in `lanes` lanes."""
    monkeypatch.setitem(settings.TOPIC_LANES, settings.ORDERS_TOPIC, lanes)
    return replace(env, defs=build_definitions(env.resources, local=True))


def _requests(result: dg.SensorResult | dg.SkipReason) -> list[dg.RunRequest]:
    assert isinstance(result, dg.SensorResult), result
    return list(result.run_requests or [])


def _partitions(request: dg.RunRequest) -> set[int]:
    return {
        r.partition
        for r in parse_ranges(request.run_config["ops"]["orders__order_events"]["config"]["ranges"])
    }


def _in_flight(env: LocalEnvironment, request: dg.RunRequest) -> None:
    """A run of the request that the daemon started and that has not ended yet."""
    env.instance.add_run(
        dg.DagsterRun(
            job_name=JOB,
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.STARTED,
            tags={**request.tags, "dagster/run_key": request.run_key or "", "dagster/sensor_name": SENSOR},
        )
    )


class Runs:
    """Executes run requests for real and adds up what their landings and ledgers report."""

    def __init__(self) -> None:
        self.landed = self.duplicates = self.paid = 0

    def execute(self, env: LocalEnvironment, request: dg.RunRequest) -> None:
        run = env.run(SENSOR, JOB, request)
        assert run.success
        [landing] = run.asset_materializations_for_node("orders__order_events")
        [ledger] = run.asset_materializations_for_node("orders__order_ledger")
        self.landed += int(landing.metadata["landed"].value)  # type: ignore[arg-type]
        self.duplicates += int(landing.metadata["duplicates"].value)  # type: ignore[arg-type]
        self.paid += int(ledger.metadata["orders_paid"].value)  # type: ignore[arg-type]


def test_each_lane_gets_a_run_of_its_own_partitions_with_its_lane_tag(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _with_lanes(local_environment, monkeypatch, 2)
    env.demo_feeder(seed=3).send_orders(40)
    result, _ = env.tick(SENSOR, None)
    requests = _requests(result)

    assert [_partitions(r) for r in requests] == [{0, 2}, {1}]
    assert [r.tags["hub/lane"] for r in requests] == ["orders/0", "orders/1"]
    assert [r.run_config["ops"]["orders__order_ledger"]["config"] for r in requests] == [
        {"lane": 0, "lanes": 2},
        {"lane": 1, "lanes": 2},
    ]
    assert len({r.run_key for r in requests}) == 2


def test_lane_waits_for_its_own_run_while_the_other_lane_goes_on(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _with_lanes(local_environment, monkeypatch, 2)
    env.demo_feeder(seed=4).send_orders(40)
    result, cursor = env.tick(SENSOR, None)
    lane_0, lane_1 = _requests(result)
    _in_flight(env, lane_0)
    Runs().execute(env, lane_1)
    env.demo_feeder(seed=5).send_orders(40)

    result, cursor = env.tick(SENSOR, cursor)

    [next_run] = _requests(result)
    assert _partitions(next_run) == {1}
    assert next_run.tags["hub/lane"] == "orders/1"


def test_changing_the_number_of_lanes_under_runs_in_flight_lands_and_pays_every_order_once(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, sent = Runs(), 0

    def send(seed: int) -> None:
        nonlocal sent
        sent += local_environment.demo_feeder(seed=seed).send_orders(30)

    one = _with_lanes(local_environment, monkeypatch, 1)
    send(1)
    result, cursor = one.tick(SENSOR, None)
    [first] = _requests(result)
    runs.execute(one, first)
    send(2)
    result, cursor = one.tick(SENSOR, cursor)
    [held_over_to_two] = _requests(result)
    _in_flight(one, held_over_to_two)

    two = _with_lanes(local_environment, monkeypatch, 2)
    send(3)
    waiting, cursor = two.tick(SENSOR, cursor)
    assert isinstance(waiting, dg.SkipReason)
    assert "wait for runs of the earlier lanes" in (waiting.skip_message or "")
    runs.execute(two, held_over_to_two)
    result, cursor = two.tick(SENSOR, cursor)
    lane_0, held_over_to_four = _requests(result)
    assert (_partitions(lane_0), _partitions(held_over_to_four)) == ({0, 2}, {1})
    runs.execute(two, lane_0)
    _in_flight(two, held_over_to_four)

    four = _with_lanes(local_environment, monkeypatch, 4)
    send(4)
    result, cursor = four.tick(SENSOR, cursor)
    beside_the_held_run = _requests(result)
    assert [_partitions(r) for r in beside_the_held_run] == [{0}, {2}]
    for request in beside_the_held_run:
        runs.execute(four, request)
    runs.execute(four, held_over_to_four)
    for _ in range(4):
        result, cursor = four.tick(SENSOR, cursor)
        if isinstance(result, dg.SkipReason):
            break
        for request in _requests(result):
            runs.execute(four, request)

    assert isinstance(result, dg.SkipReason) and "no new messages" in (result.skip_message or "")
    ends = local_environment.resources["topics"].end_offsets(settings.ORDERS_TOPIC)
    assert sum(ends.values()) == sent
    assert runs.landed == sent
    assert runs.duplicates == 0
    assert runs.paid == sent


def test_a_partition_added_to_the_topic_while_it_runs_is_landed_by_its_lane_and_its_orders_paid(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, sent, lanes_of_partition_3 = Runs(), 0, set()
    two = _with_lanes(local_environment, monkeypatch, 2)
    sent += local_environment.demo_feeder(seed=1).send_orders(30)
    result, cursor = two.tick(SENSOR, None)
    for request in _requests(result):
        runs.execute(two, request)
    # What `kafka-topics --alter --partitions 4` does, in the local log: keys now spread over 4.
    topics = local_environment.resources["topics"]
    (Path(topics.root) / settings.ORDERS_TOPIC / "topic.json").write_text(json.dumps({"partitions": 4}))
    sent += local_environment.demo_feeder(seed=2).send_orders(40)
    assert topics.end_offsets(settings.ORDERS_TOPIC)[3] > 0

    for _ in range(4):
        result, cursor = two.tick(SENSOR, cursor)
        if isinstance(result, dg.SkipReason):
            break
        for request in _requests(result):
            if 3 in _partitions(request):
                lanes_of_partition_3.add(request.tags["hub/lane"])
            runs.execute(two, request)

    assert isinstance(result, dg.SkipReason) and "no new messages" in (result.skip_message or "")
    assert lanes_of_partition_3 == {"orders/1"}
    assert (runs.landed, runs.duplicates, runs.paid) == (sent, 0, sent)
