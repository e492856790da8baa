"""An orders-only local environment (embedded parts in a temporary folder) for the operations tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.definitions import build_definitions, local_resources
from hub_pipelines.demo.feeder import DemoFeeder
from tests.platform.conftest import LocalEnvironment

ORDERS_JOB = "orders_pipeline"
ORDERS_SENSOR = "orders_topic_sensor"
DOWNSTREAM_JOB = "orders_downstream"
DOWNSTREAM_SENSOR = "orders_downstream_sensor"


@pytest.fixture
def orders_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEnvironment]:
    """The local environment's resources in a temporary folder (orders only: no warehouse is opened), its
    sensor's runs landing without following the topic."""
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "hub"))
    monkeypatch.setattr(settings, "ORDERS_FOLLOW_SECONDS", 0.0)
    monkeypatch.delenv("HUB_PUSHGATEWAY_URL", raising=False)
    resources = local_resources()
    for topic in (settings.ORDERS_TOPIC, settings.ORDER_EVENTS_OUT_TOPIC):
        resources["topics"].create_topic(topic, settings.TOPIC_PARTITIONS)
    with dg.instance_for_test() as instance:
        yield LocalEnvironment(
            tmp_path / "hub", resources, build_definitions(resources, local=True), instance
        )


def feeder(env: LocalEnvironment) -> DemoFeeder:
    return env.demo_feeder(seed=11)


def run_orders_pipeline(env: LocalEnvironment, downstream: bool = True) -> dg.RunRequest:
    """The orders topic sensor's run, then (unless not `downstream`) the run the downstream sensor asks
    for after it: the outbox relay, the confirmations, the inventory snapshot."""
    result, _ = env.tick(ORDERS_SENSOR, None)
    assert isinstance(result, dg.SensorResult) and result.run_requests, result
    [request] = result.run_requests
    run = env.run(ORDERS_SENSOR, ORDERS_JOB, request)
    assert run.success
    if downstream:
        after, _ = env.tick(DOWNSTREAM_SENSOR, None)
        assert isinstance(after, dg.SensorResult) and after.run_requests, after
        [relay] = after.run_requests
        assert env.run(DOWNSTREAM_SENSOR, DOWNSTREAM_JOB, relay).success
    return request
