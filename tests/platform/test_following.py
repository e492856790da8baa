"""Landing runs that follow their topic, executed by Dagster on the local environment: each micro-batch
is a materialization of the landing asset with its ranges and its produce -> landed latency, every event
lands once, and the topic sensor's next tick folds the micro-batches in from those materializations."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.policies import LANDING_LATENCY_CHECK
from hub_pipelines.landing.batches import TopicCursor
from hub_pipelines.landing.latency import MAX_METADATA, P50_METADATA
from hub_pipelines.landing.offsets import OffsetRange, parse_ranges
from tests.platform.conftest import ArrivalsWhileFollowing, LocalEnvironment

RAW_EVENTS = dg.AssetKey(["analytics", "raw_events"])
ORDER_EVENTS = dg.AssetKey(["orders", "order_events"])


def _value(metadata: dict[str, dg.MetadataValue], name: str) -> Any:
    return metadata[name].value


def _landed_ranges(records: list[dg.EventLogRecord]) -> list[OffsetRange]:
    ranges: list[OffsetRange] = []
    for record in records:
        assert record.asset_materialization is not None
        text = _value(record.asset_materialization.metadata, "ranges")
        ranges += parse_ranges(text) if text != "none" else []
    return ranges


def _following(
    local_environment: LocalEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    topic: str,
    follow_setting: str,
    arrive: Callable[[], int],
) -> tuple[ArrivalsWhileFollowing, LocalEnvironment]:
    """The environment whose runs of `topic` follow it for 2 s, with `arrive`'s messages arriving while
    they do (once armed)."""
    topics = ArrivalsWhileFollowing(local_environment.resources["topics"], topic, arrive)
    monkeypatch.setattr(settings, follow_setting, 2.0)
    return topics, local_environment.with_topics(topics)


def _assert_the_last_report_alone_brings_the_cursor_to_the_ends(
    env: LocalEnvironment, sensor: str, records: Sequence[dg.EventLogRecord], ends: Mapping[int, int]
) -> None:
    """A cursor that saw every report but the last one's ranges (as when a follower was killed between
    booking its batches and reporting them, and the next run went on from the book) reaches the topic's
    ends from that last report: no run is asked for offsets that are landed already."""
    only_last = TopicCursor(last_landing_seen=records[-2].storage_id).to_json()
    after, cursor = env.tick(sensor, only_last)
    assert isinstance(after, dg.SkipReason), after
    assert TopicCursor.from_json(cursor).landed == {p: end for p, end in ends.items() if end}


def test_following_run_books_each_micro_batch_once_and_the_sensor_folds_them_in(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
):
    feeder = local_environment.demo_feeder(seed=31)
    first = feeder.send_events(120)
    topics, env = _following(
        local_environment,
        monkeypatch,
        settings.EVENTS_TOPIC,
        "EVENTS_FOLLOW_SECONDS",
        lambda: feeder.send_events(90),
    )

    result, cursor = env.tick("events_topic_sensor", None)
    assert isinstance(result, dg.SensorResult) and result.run_requests
    request = result.run_requests[0]
    assert request.run_config["ops"]["analytics__raw_events"]["config"]["follow_seconds"] == 2.0
    longest = request.run_config["ops"]["analytics__raw_events"]["config"]["follow_longest_seconds"]
    assert longest == settings.EVENTS_FOLLOW_LONGEST_SECONDS
    topics.armed = True
    run = env.run("events_topic_sensor", "analytics_pipeline", request, asset_selection=[RAW_EVENTS])
    assert run.success

    records = env.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_EVENTS), limit=100, ascending=True
    ).records
    assert {record.run_id for record in records} == {run.run_id}
    produced = first + topics.arrived
    assert topics.arrived == 90 and len(records) >= 2
    metadata = [record.asset_materialization.metadata for record in records if record.asset_materialization]
    assert _value(metadata[-1], "micro_batches") == len(records)
    ranges = _landed_ranges(records)
    ends = topics.inner.end_offsets(settings.EVENTS_TOPIC)
    for partition, end in ends.items():
        mine = sorted((r.start, r.end) for r in ranges if r.partition == partition)
        assert [start for start, _ in mine] == [0, *(stop for _, stop in mine[:-1])], (partition, mine)
        assert mine[-1][1] == end
    assert sum(_value(m, "read") for m in metadata) == produced
    assert sum(_value(m, "landed") + _value(m, "dead_lettered") for m in metadata) == produced
    assert _value(metadata[-1], "run_read") == produced
    stored = env.resources["warehouse"].query_df(
        f"SELECT count() AS rows, uniqExact(event_id) AS ids FROM {configured_tables().raw_events} FINAL"
    )
    assert int(stored["rows"][0]) == int(stored["ids"][0]) == sum(_value(m, "landed") for m in metadata)

    for batch in metadata:
        if _value(batch, "read"):
            assert isinstance(batch[P50_METADATA], dg.FloatMetadataValue)
            assert isinstance(batch[MAX_METADATA], dg.FloatMetadataValue)
            assert 0 <= _value(batch, P50_METADATA) <= _value(batch, MAX_METADATA)
    latency_checks = [c for c in run.get_asset_check_evaluations() if c.check_name == LANDING_LATENCY_CHECK]
    assert len(latency_checks) == 1
    assert isinstance(latency_checks[0].metadata[MAX_METADATA], dg.FloatMetadataValue)

    after, cursor = env.tick("events_topic_sensor", cursor)
    assert isinstance(after, dg.SkipReason), after
    assert TopicCursor.from_json(cursor).landed == {p: end for p, end in ends.items() if end}

    _assert_the_last_report_alone_brings_the_cursor_to_the_ends(env, "events_topic_sensor", records, ends)


def test_orders_landing_reports_produce_to_landed_latency_as_numbers(local_environment: LocalEnvironment):
    local_environment.demo_feeder(seed=5).send_orders(12)
    result, _ = local_environment.tick("orders_topic_sensor", None)
    assert isinstance(result, dg.SensorResult) and result.run_requests
    run = local_environment.run(
        "orders_topic_sensor", "orders_pipeline", result.run_requests[0], asset_selection=[ORDER_EVENTS]
    )
    assert run.success

    event = local_environment.instance.get_latest_materialization_event(ORDER_EVENTS)
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    assert _value(metadata, "read") == 12 and _value(metadata, "micro_batches") == 1
    assert isinstance(metadata[P50_METADATA], dg.FloatMetadataValue)
    assert isinstance(metadata[MAX_METADATA], dg.FloatMetadataValue)
    assert 0 <= _value(metadata, P50_METADATA) <= _value(metadata, MAX_METADATA)


def test_orders_follower_names_the_book_with_each_batch_so_a_lost_report_leaves_no_hole_in_the_cursor(
    local_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
):
    feeder = local_environment.demo_feeder(seed=32)
    feeder.send_orders(10)
    topics, env = _following(
        local_environment,
        monkeypatch,
        settings.ORDERS_TOPIC,
        "ORDERS_FOLLOW_SECONDS",
        lambda: feeder.send_orders(8),
    )

    result, _ = env.tick("orders_topic_sensor", None)
    assert isinstance(result, dg.SensorResult) and result.run_requests
    topics.armed = True
    run = env.run(
        "orders_topic_sensor", "orders_pipeline", result.run_requests[0], asset_selection=[ORDER_EVENTS]
    )
    assert run.success and topics.arrived == 8

    records = env.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ORDER_EVENTS), limit=100, ascending=True
    ).records
    assert len(records) >= 2
    ends = topics.inner.end_offsets(settings.ORDERS_TOPIC)
    _assert_the_last_report_alone_brings_the_cursor_to_the_ends(env, "orders_topic_sensor", records, ends)
