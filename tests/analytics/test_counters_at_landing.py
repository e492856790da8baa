"""Real-time counters written by the landing sink beside its insert, and the catch-up for chunks it missed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

from hub_pipelines.analytics import counters
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import Cache, CacheBatch
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import CacheUnavailable, InProcessCache, RedisCache
from hub_pipelines.resources.topics import LocalTopicLog
from tests.analytics.demo_events import demo_event_topic
from tests.services.cutting_proxy import cutting_proxy

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
TOPIC = "events"
EVENTS = 1200


class CacheDown(InProcessCache):
    """A cache that refuses every counters batch, as an unreachable Redis does."""

    def write_once(self, marker: str, queue: Callable[[CacheBatch], None], ttl: float | None = None) -> bool:
        raise CacheUnavailable(f"cache unreachable while writing under {marker!r}")


class CutAt(NamedTuple):
    """Where the proxy cuts the counters' connection: at a command of the first batch's request."""

    pattern: bytes
    after: bool


def demo_topic(tmp_path: Path) -> LocalTopicLog:
    return demo_event_topic(tmp_path, TOPIC, EVENTS, HOUR, seed=11)


def land(topics: LocalTopicLog, warehouse: ChdbWarehouse, tables: AnalyticsTables, cache: Cache, run: str):
    sink = WarehouseEventsSink(warehouse, tables, counters=cache)
    counts = land_ranges(topics, sink, TOPIC, [OffsetRange(0, 0, EVENTS)], run, chunk_messages=500)
    return sink, counts


def assert_cache_matches_warehouse(cache: Cache, warehouse: ChdbWarehouse, tables: AnalyticsTables) -> None:
    from_cache = counters.numbers_from_cache(cache, HOUR)
    from_warehouse = counters.numbers_from_warehouse(warehouse, tables, HOUR)
    assert sum(from_warehouse.events_by_type.values()) == EVENTS
    assert from_cache.events_by_type == from_warehouse.events_by_type
    assert (from_cache.errors, from_cache.purchases, from_cache.revenue_cents) == (
        from_warehouse.errors,
        from_warehouse.purchases,
        from_warehouse.revenue_cents,
    )
    assert abs(from_cache.active_users - from_warehouse.active_users) <= 0.02 * from_warehouse.active_users
    exact = counters.events_per_minute_in_warehouse(warehouse, tables, HOUR)
    assert sum(exact.values()) == EVENTS
    assert counters.events_per_minute_from_cache(cache, HOUR) == exact


def test_landing_counts_every_chunk_once_and_a_replay_adds_nothing(cache, tmp_path, warehouse, tables):
    topics = demo_topic(tmp_path)
    sink, first = land(topics, warehouse, tables, cache, "r1")
    assert first.landed == EVENTS and sink.finish_counting() == len(sink.outcomes) == 3
    _, replay = land(topics, warehouse, tables, cache, "r2")
    assert replay.duplicates == EVENTS
    assert_cache_matches_warehouse(cache, warehouse, tables)
    caught_up = counters.count_uncounted_chunks(warehouse, tables, cache, "r1")
    assert (caught_up.counted_at_landing, caught_up.counted_now, caught_up.events_counted) == (3, 0, EVENTS)
    assert_cache_matches_warehouse(cache, warehouse, tables)


def test_chunks_landed_while_the_cache_was_down_are_counted_from_the_warehouse_once(
    cache, tmp_path, warehouse, tables
):
    topics = demo_topic(tmp_path)
    sink, landed = land(topics, warehouse, tables, CacheDown(), "r1")
    assert landed.landed == EVENTS and sink.finish_counting() == 0
    caught_up = counters.count_uncounted_chunks(warehouse, tables, cache, "r1")
    again = counters.count_uncounted_chunks(warehouse, tables, cache, "r1")
    assert (caught_up.counted_at_landing, caught_up.counted_now, caught_up.events_counted) == (0, 3, EVENTS)
    assert (again.counted_at_landing, again.counted_now) == (3, 0)
    assert_cache_matches_warehouse(cache, warehouse, tables)


@pytest.mark.parametrize(
    ("cut", "counted_at_landing"),
    [
        # Before the first INCRBY, after the batch's PFADDs, PFMERGEs and ZINCRBYs have gone through.
        pytest.param(CutAt(b"$6\r\nINCRBY\r\n", after=False), 2, id="mid_batch"),
        pytest.param(CutAt(b"$4\r\nEXEC\r\n", after=True), 3, id="batch_sent_answer_lost"),
    ],
)
def test_counters_of_a_batch_cut_mid_connection_are_counted_exactly_once_after_catch_up(
    cut: CutAt,
    counted_at_landing: int,
    redis_server: str,
    redis_key_prefix: str,
    tmp_path: Path,
    warehouse: ChdbWarehouse,
    tables: AnalyticsTables,
) -> None:
    topics = demo_topic(tmp_path)
    target = urlsplit(redis_server)
    with cutting_proxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        proxy.cut_at(cut.pattern, after=cut.after)
        through_proxy = RedisCache(url=f"redis://127.0.0.1:{proxy.port}/0", key_prefix=redis_key_prefix)
        sink, landed = land(topics, warehouse, tables, through_proxy, "r1")
        assert landed.landed == EVENTS and sink.finish_counting() == counted_at_landing
        assert proxy.cuts == 1
    cache = RedisCache(url=redis_server, key_prefix=redis_key_prefix)
    caught_up = counters.count_uncounted_chunks(warehouse, tables, cache, "r1")
    assert (caught_up.counted_at_landing, caught_up.counted_now) == (
        counted_at_landing,
        3 - counted_at_landing,
    )
    assert_cache_matches_warehouse(cache, warehouse, tables)


def test_rerun_counts_chunks_a_killed_run_booked_without_their_counters_once(
    cache, tmp_path, warehouse, tables
):
    topics = demo_topic(tmp_path)
    # The killed run booked every chunk, and neither its counter thread nor its catch-up wrote them.
    sink, landed = land(topics, warehouse, tables, CacheDown(), "killed")
    assert landed.landed == EVENTS and sink.finish_counting() == 0

    _, rerun = land(topics, warehouse, tables, cache, "rerun")
    _, again = land(topics, warehouse, tables, cache, "again")

    assert rerun.duplicates == again.duplicates == EVENTS
    assert_cache_matches_warehouse(cache, warehouse, tables)
