"""The topic sensors: metadata-only ticks, exact capped ranges, success-gated cursors, retries of failures,
cursors resynced from other writers' landings, and a page for a stuck range."""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.monitoring.run_monitoring import check_run_timeout

from hub_pipelines import settings
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.definitions import build_definitions
from hub_pipelines.landing.batches import STUCK_AFTER_FAILURES, TopicCursor
from hub_pipelines.landing.offsets import parse_ranges
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.sql_database import SqliteDatabase
from hub_pipelines.sensors import topics as topic_sensors
from tests.platform.conftest import LocalEnvironment
from tests.services.kafka import KafkaBroker
from tests.services.kafka_mock_cluster import MockCluster

SENSOR = "orders_topic_sensor"
ORDER_EVENTS = dg.AssetKey(["orders", "order_events"])


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
    env.instance.add_run(
        dg.DagsterRun(
            job_name="orders_pipeline",
            run_id=str(uuid.uuid4()),
            status=status,
            tags={"dagster/run_key": request.run_key or "", "dagster/sensor_name": SENSOR},
        )
    )


def _backoff_over(cursor: str | None) -> str:
    """The cursor as it is once the retry backoff has passed (the sensor reads the wall clock)."""
    return replace(TopicCursor.from_json(cursor), retry_at=0.0).to_json()


def _unreadable_since(cursor: str | None, seconds_ago: float) -> str:
    """The cursor as it is when its topic has been unreadable that long (the sensor reads the wall clock)."""
    data = json.loads(cursor or "{}")
    data["unreadable"]["since"] = time.time() - seconds_ago
    return json.dumps(data)


def _land_by_hand(env: LocalEnvironment, ranges: str) -> None:
    """Land ranges the way the UI or the CLI does: a run of the landing asset no sensor started."""
    result = env.defs.resolve_job_def("orders_pipeline").execute_in_process(
        run_config={"ops": {"orders__order_events": {"config": {"ranges": ranges}}}},
        instance=env.instance,
        asset_selection=[ORDER_EVENTS],
    )
    assert result.success


def test_idle_topic_skips_with_the_reason(local_environment: LocalEnvironment):
    result, _ = local_environment.tick(SENSOR, None)
    assert isinstance(result, dg.SkipReason)
    assert "no new messages on orders" in (result.skip_message or "")


def test_upstream_loss_of_the_newest_landing_is_named_in_the_skip_reason(local_environment: LocalEnvironment):
    lost = "orders partition 2: offsets 0..41 (42) deleted upstream before they were read"
    local_environment.instance.report_runless_asset_event(
        dg.AssetMaterialization(ORDER_EVENTS, metadata={"ranges": "none", "upstream_loss": lost})
    )
    result, _ = local_environment.tick(SENSOR, None)

    assert isinstance(result, dg.SkipReason)
    assert (
        result.skip_message
        == f"no new messages on orders (p0@0, p1@0, p2@0); last landing lost upstream: {lost}"
    )


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


def test_failed_range_is_requested_again_after_the_backoff(local_environment: LocalEnvironment):
    _produce(local_environment, 10)
    first, cursor = local_environment.tick(SENSOR, None)
    failed = _only_request(first)
    _finish(local_environment, failed, dg.DagsterRunStatus.FAILURE)
    waiting, cursor = local_environment.tick(SENSOR, cursor)
    assert isinstance(waiting, dg.SkipReason)
    assert "failed" in (waiting.skip_message or "") and "retrying 0:0-10 at" in (waiting.skip_message or "")
    retry, cursor = local_environment.tick(SENSOR, _backoff_over(cursor))
    again = _only_request(retry)
    assert _ranges_of(again) == _ranges_of(failed) == "0:0-10"
    assert again.run_key != failed.run_key


def test_range_landed_by_hand_moves_the_cursor_past_it(local_environment: LocalEnvironment):
    local_environment.demo_feeder(seed=5).send_orders(30)
    ends = local_environment.resources["topics"].end_offsets(settings.ORDERS_TOPIC)
    _land_by_hand(local_environment, ",".join(f"{p}:0-{end}" for p, end in ends.items()))
    result, cursor = local_environment.tick(SENSOR, None)
    assert TopicCursor.from_json(cursor).landed == {p: end for p, end in ends.items() if end}
    catch_up = _only_request(result)
    assert all(r.size == 0 for r in parse_ranges(_ranges_of(catch_up)))
    run = local_environment.run(SENSOR, "orders_pipeline", catch_up)
    assert run.success
    ledger = run.asset_materializations_for_node("orders__order_ledger")
    assert ledger and ledger[0].metadata["orders_paid"].value == 30
    _finish(local_environment, catch_up, dg.DagsterRunStatus.SUCCESS)
    idle, _ = local_environment.tick(SENSOR, cursor)
    assert isinstance(idle, dg.SkipReason) and "no new messages" in (idle.skip_message or "")


def test_failed_range_landed_meanwhile_by_hand_is_not_requested_again(local_environment: LocalEnvironment):
    _produce(local_environment, 10)
    first, cursor = local_environment.tick(SENSOR, None)
    _finish(local_environment, _only_request(first), dg.DagsterRunStatus.FAILURE)
    _produce(local_environment, 5)
    _land_by_hand(local_environment, "0:0-10")
    result, cursor = local_environment.tick(SENSOR, _backoff_over(cursor))
    assert _ranges_of(_only_request(result)) == "0:10-15"
    assert TopicCursor.from_json(cursor).landed == {0: 10}


def test_long_landing_history_is_read_over_ticks_before_planning(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(topic_sensors, "LANDINGS_PER_TICK", 1)
    _produce(local_environment, 20)
    _land_by_hand(local_environment, "0:0-5")
    _land_by_hand(local_environment, "0:5-12")
    reading, cursor = local_environment.tick(SENSOR, None)
    assert isinstance(reading, dg.SkipReason) and "more next tick" in (reading.skip_message or "")
    reading, cursor = local_environment.tick(SENSOR, cursor)
    assert isinstance(reading, dg.SkipReason) and TopicCursor.from_json(cursor).landed == {0: 12}
    result, cursor = local_environment.tick(SENSOR, cursor)
    assert _ranges_of(_only_request(result)) == "0:12-20"


def test_range_failing_three_times_pages_once_and_says_so_in_the_skip_reason(
    local_environment: LocalEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    _produce(local_environment, 10)
    # A database path that is a folder: the landing step fails with SQLite's own error.
    unopenable = {**local_environment.resources, "database": SqliteDatabase(path=str(tmp_path))}
    failing = build_definitions(unopenable, local=True).resolve_job_def("orders_pipeline")
    result, cursor = local_environment.tick(SENSOR, None)
    skip_reasons = []
    with caplog.at_level(logging.WARNING, logger="hub_pipelines.resources.notifier"):
        for failure in range(1, STUCK_AFTER_FAILURES + 2):
            request = _only_request(result)
            if failure == STUCK_AFTER_FAILURES:
                stuck_run = failing.execute_in_process(
                    run_config=request.run_config,
                    instance=local_environment.instance,
                    tags={
                        **request.tags,
                        "dagster/run_key": request.run_key or "",
                        "dagster/sensor_name": SENSOR,
                    },
                    asset_selection=[ORDER_EVENTS],
                    raise_on_error=False,
                )
                assert not stuck_run.success
            else:
                _finish(local_environment, request, dg.DagsterRunStatus.FAILURE)
            waiting, cursor = local_environment.tick(SENSOR, cursor)
            assert isinstance(waiting, dg.SkipReason)
            skip_reasons.append(waiting.skip_message or "")
            result, cursor = local_environment.tick(SENSOR, _backoff_over(cursor))
    [page] = [r.getMessage() for r in caplog.records if r.name == "hub_pipelines.resources.notifier"]
    assert "stuck-range/orders/0:0-10" in page
    assert "orders 0:0-10 is stuck: failed 3 times, last error: step orders__order_events:" in page
    assert "unable to open database file" in page
    assert f"/runs/{stuck_run.run_id}" in page
    assert all("is stuck" not in reason for reason in skip_reasons[: STUCK_AFTER_FAILURES - 1])
    assert all("orders 0:0-10 is stuck" in reason for reason in skip_reasons[STUCK_AFTER_FAILURES - 1 :])
    assert "unable to open database file" in skip_reasons[STUCK_AFTER_FAILURES - 1]


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


def test_a_topic_deleted_and_recreated_pages_once_and_is_never_landed_past_what_was_landed(
    local_environment: LocalEnvironment, caplog: pytest.LogCaptureFixture
):
    topics = local_environment.resources["topics"]
    _produce(local_environment, 10, partition=0)
    _produce(local_environment, 3, partition=1)
    first, cursor = local_environment.tick(SENSOR, None)
    _finish(local_environment, _only_request(first), dg.DagsterRunStatus.SUCCESS)
    idle, cursor = local_environment.tick(SENSOR, cursor)
    assert isinstance(idle, dg.SkipReason) and TopicCursor.from_json(cursor).landed == {0: 10, 1: 3}

    # Deleted and made again: every partition starts at offset 0, below what the book holds.
    shutil.rmtree(Path(topics.root) / settings.ORDERS_TOPIC)
    topics.create_topic(settings.ORDERS_TOPIC, settings.TOPIC_PARTITIONS)
    _produce(local_environment, 2, partition=0)
    with caplog.at_level(logging.WARNING, logger="hub_pipelines.resources.notifier"):
        rewound, cursor = local_environment.tick(SENSOR, cursor)
        # The new partition 0 grows past the old landed offset: landing from 10 on would skip its 0..9.
        _produce(local_environment, 20, partition=0)
        _produce(local_environment, 5, partition=2)
        later, cursor = local_environment.tick(SENSOR, cursor)

    assert isinstance(rewound, dg.SkipReason), rewound
    assert "orders partition 0 ends at offset 2, below offset 10 already landed" in (
        rewound.skip_message or ""
    )
    pages = [r.getMessage() for r in caplog.records if r.name == "hub_pipelines.resources.notifier"]
    assert len(pages) == 2, pages
    assert "topic-rewound/orders/0/10" in pages[0] and "topic-rewound/orders/1/3" in pages[1]
    assert "orders partition 0 ends at offset 2, below offset 10 already landed" in pages[0]
    request = _only_request(later)
    assert _ranges_of(request) == "2:0-5"
    assert request.run_config["ops"]["orders__order_events"]["config"]["held_partitions"] == "0,1"


def test_a_landing_from_the_book_pages_a_partition_recreated_below_it_and_lands_its_other_partitions(
    local_environment: LocalEnvironment, caplog: pytest.LogCaptureFixture
):
    topics = local_environment.resources["topics"]
    _produce(local_environment, 10, partition=0)
    _land_by_hand(local_environment, "0:0-10")
    shutil.rmtree(Path(topics.root) / settings.ORDERS_TOPIC)
    topics.create_topic(settings.ORDERS_TOPIC, settings.TOPIC_PARTITIONS)
    _produce(local_environment, 2, partition=0)
    _produce(local_environment, 3, partition=1)

    with caplog.at_level(logging.WARNING, logger="hub_pipelines.resources.notifier"):
        result = local_environment.defs.resolve_job_def("orders_pipeline").execute_in_process(
            instance=local_environment.instance, asset_selection=[ORDER_EVENTS]
        )

    assert result.success
    [landed] = [m for m in result.asset_materializations_for_node("orders__order_events")]
    assert landed.metadata["ranges"].value == "1:0-3"
    pages = [r.getMessage() for r in caplog.records if r.name == "hub_pipelines.resources.notifier"]
    assert len(pages) == 1 and "topic-rewound/orders/0/10" in pages[0], pages


def test_a_topic_the_sensor_cannot_read_pages_once_after_five_minutes_and_lands_again_once_it_is_back(
    local_environment: LocalEnvironment, caplog: pytest.LogCaptureFixture
):
    folder = Path(local_environment.resources["topics"].root) / settings.ORDERS_TOPIC
    _produce(local_environment, 3)
    first, cursor = local_environment.tick(SENSOR, None)
    _finish(local_environment, _only_request(first), dg.DagsterRunStatus.SUCCESS)
    folder.rename(folder.with_name("orders-away"))

    with caplog.at_level(logging.WARNING, logger="hub_pipelines.resources.notifier"):
        unreadable, cursor = local_environment.tick(SENSOR, cursor)
        assert not caplog.records
        # Five minutes later, as the sensor's clock would see it.
        cursor = _unreadable_since(cursor, seconds_ago=301)
        paged, cursor = local_environment.tick(SENSOR, cursor)
        again, cursor = local_environment.tick(SENSOR, cursor)
        pages = [r.getMessage() for r in caplog.records if r.name == "hub_pipelines.resources.notifier"]

    for result in (unreadable, paged, again):
        assert isinstance(result, dg.SkipReason), result
        assert "cannot read the end offsets of orders: topic 'orders' does not exist" in (
            result.skip_message or ""
        )
    assert len(pages) == 1, pages
    assert "topic-unreadable/orders" in pages[0]
    assert "cannot read the end offsets of orders for 5 min: topic 'orders' does not exist" in pages[0]

    folder.with_name("orders-away").rename(folder)
    _produce(local_environment, 2)
    resumed, cursor = local_environment.tick(SENSOR, cursor)
    assert _ranges_of(_only_request(resumed)) == "0:3-5"
    assert "unreadable" not in json.loads(cursor or "{}")


def test_a_kafka_broker_down_past_its_clients_retries_is_a_skip_naming_it_then_landing_resumes(
    local_environment: LocalEnvironment,
):
    cluster = MockCluster.start()
    topics = KafkaTopics(bootstrap_servers=cluster.bootstrap_servers, timeout_seconds=2)
    try:
        KafkaBroker(cluster.bootstrap_servers, creates_topics=False).ensure_topic(settings.ORDERS_TOPIC, 4)
        on_kafka = local_environment.with_topics(topics)
        cluster.set_down()
        down, cursor = on_kafka.tick(SENSOR, None)
        cluster.set_up()
        topics.produce(settings.ORDERS_TOPIC, [OutgoingMessage(value=b'{"event_id": "e"}', partition=1)])
        back, cursor = on_kafka.tick(SENSOR, cursor)
    finally:
        topics.close()
        cluster.stop()

    assert isinstance(down, dg.SkipReason), down
    assert (down.skip_message or "").startswith(
        f"cannot read the end offsets of orders: reading metadata of topic 'orders' from {cluster.bootstrap_servers}"
    ), down.skip_message
    assert _ranges_of(_only_request(back)) == "1:0-1"


def test_a_landing_run_still_going_past_its_max_runtime_is_ended_by_run_monitoring(
    local_environment: LocalEnvironment,
):
    """A run whose worker died unnoticed would hold its lane for good: its max runtime ends it."""
    _produce(local_environment, 10)
    result, _ = local_environment.tick(SENSOR, None)
    request = _only_request(result)
    max_runtime = settings.ORDERS_FOLLOW_LONGEST_SECONDS + settings.LANDING_RUN_SPARE_SECONDS
    assert request.tags[dg.MAX_RUNTIME_SECONDS_TAG] == str(int(max_runtime))

    instance = local_environment.instance
    run = instance.add_run(
        dg.DagsterRun(job_name="orders_pipeline", run_id=str(uuid.uuid4()), tags=dict(request.tags))
    )
    started_long_ago = time.time() - max_runtime - 60
    instance.handle_new_event(
        dg.EventLogEntry(
            error_info=None,
            level=logging.DEBUG,
            user_message="",
            run_id=run.run_id,
            timestamp=started_long_ago,
            dagster_event=dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name
            ),
        )
    )
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.STARTED

    check_run_timeout(instance, record, logging.getLogger(__name__), default_timeout_seconds=0)

    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None
    assert ended.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.FAILURE)
