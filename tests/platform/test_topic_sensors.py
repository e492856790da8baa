"""The topic sensors: metadata-only ticks, exact capped ranges, success-gated cursors, retries of failures."""

from __future__ import annotations

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from hub_pipelines import settings
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.landing.batches import TopicCursor
from hub_pipelines.landing.offsets import parse_ranges
from tests.platform.conftest import LocalEnvironment

SENSOR = "orders_topic_sensor"


def _produce(env: LocalEnvironment, count: int, partition: int = 0) -> None:
    env.resources["topics"].produce(
        settings.ORDERS_TOPIC,
        (OutgoingMessage(value=b'{"event_id": "e%d"}' % i, partition=partition) for i in range(count)),
    )


def _only_request(result: dg.SensorResult | dg.SkipReason) -> dg.RunRequest:
    assert isinstance(result, dg.SensorResult), result
    [request] = result.run_requests or []
    return request


def _ranges_of(request: dg.RunRequest) -> str:
    return request.run_config["ops"]["orders__order_events"]["config"]["ranges"]


def _finish(env: LocalEnvironment, request: dg.RunRequest, status: dg.DagsterRunStatus) -> None:
    create_run_for_test(
        env.instance,
        job_name="orders_pipeline",
        status=status,
        tags={"dagster/run_key": request.run_key, "dagster/sensor_name": SENSOR},
    )


def test_idle_topic_skips_with_the_reason(local_environment: LocalEnvironment):
    result, _ = local_environment.tick(SENSOR, None)
    assert isinstance(result, dg.SkipReason)
    assert "no new messages on orders" in (result.skip_message or "")


def test_request_covers_exactly_the_pending_offsets(local_environment: LocalEnvironment):
    _produce(local_environment, 25, partition=1)
    result, _ = local_environment.tick(SENSOR, None)
    request = _only_request(result)
    assert _ranges_of(request) == "1:0-25"
    assert request.tags["hub/topic"] == settings.ORDERS_TOPIC


def test_second_run_waits_while_the_first_is_in_flight(local_environment: LocalEnvironment):
    _produce(local_environment, 10)
    first, cursor = local_environment.tick(SENSOR, None)
    _finish(local_environment, _only_request(first), dg.DagsterRunStatus.STARTED)
    _produce(local_environment, 10)
    result, after = local_environment.tick(SENSOR, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "still in flight" in (result.skip_message or "")
    assert after == cursor


def test_cursor_advances_only_after_the_landing_run_succeeded(local_environment: LocalEnvironment):
    _produce(local_environment, 10)
    first, cursor = local_environment.tick(SENSOR, None)
    assert TopicCursor.from_json(cursor).landed == {}
    _finish(local_environment, _only_request(first), dg.DagsterRunStatus.SUCCESS)
    _produce(local_environment, 5)
    second, cursor = local_environment.tick(SENSOR, cursor)
    assert _ranges_of(_only_request(second)) == "0:10-15"
    assert TopicCursor.from_json(cursor).landed == {0: 10}


def test_failed_range_is_requested_again(local_environment: LocalEnvironment):
    _produce(local_environment, 10)
    first, cursor = local_environment.tick(SENSOR, None)
    failed = _only_request(first)
    _finish(local_environment, failed, dg.DagsterRunStatus.FAILURE)
    retry, cursor = local_environment.tick(SENSOR, cursor)
    again = _only_request(retry)
    assert _ranges_of(again) == _ranges_of(failed) == "0:0-10"
    assert again.run_key != failed.run_key


def test_tick_with_a_million_pending_messages_requests_one_capped_batch(local_environment: LocalEnvironment):
    topics = local_environment.resources["topics"]
    for partition in range(settings.TOPIC_PARTITIONS):
        for _ in range(7):
            topics.produce(
                settings.ORDERS_TOPIC,
                [OutgoingMessage(value=b"x", partition=partition) for _ in range(50_000)],
            )
    assert sum(topics.end_offsets(settings.ORDERS_TOPIC).values()) >= 1_000_000
    result, _ = local_environment.tick(SENSOR, None)
    ranges = parse_ranges(_ranges_of(_only_request(result)))
    assert sum(r.size for r in ranges) == settings.ORDERS_PER_RUN
    assert {r.partition for r in ranges} == set(range(settings.TOPIC_PARTITIONS))
