"""Dashboard query latency: the named queries over generated events, uncached and cached.

    uv run python bench/analytics_queries.py [--query-events 10000000] [--query-repeats 40]

The events are generated inside ClickHouse (chdb) and go through the same materialized views as
landed events; the last eight days are then rebuilt by `rebuild_day` as the daily rollups asset
does. Each named query runs alternately over the last 24 hours and the last 7 days; p50/p95 are
printed uncached (`DashboardQueries.fetch`: straight to the warehouse, rows as the dashboard gets them)
and cached (Redis). They are measured twice: as soon as the events are in, and again once background
merges have collapsed the hour and day rollups to one part per partition, which the tables' own
`min_age_to_force_merge_seconds` does a minute after a part is written; a dashboard in production reads
the latter, apart from the parts of the last minute. Nothing here runs OPTIMIZE. `bench/analytics.py`
runs the same measurement after its ingestion figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_pipelines.analytics.dashboard import NAMED_QUERIES, DashboardQueries
from hub_pipelines.analytics.rollups import rebuild_day
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import RedisCache


def fill_for_queries(warehouse: ChdbWarehouse, count: int) -> AnalyticsTables:
    tables = AnalyticsTables("bench_queries")
    tables.ensure(warehouse)
    types = "['page_view','page_view','page_view','page_view','page_view','page_view','page_view','add_to_cart','purchase','error']"
    step = 1_000_000
    for first in range(0, count, step):
        warehouse.execute(
            f"INSERT INTO {tables.raw_events} (event_id, type, user_id, session_id, ts, path, product_id, amount, "
            "error_code, topic, partition, offset) "
            f"SELECT toString(generateUUIDv4(number)), {types}[1 + number % 10] AS t, concat('u-', toString(rand() % 50000)), "
            "concat('s-', toString(rand() % 200000)), now64(3) - toIntervalSecond(rand() % (7 * 86400)), '/', "
            "if(t IN ('add_to_cart','purchase'), concat('p-', toString(rand() % 300)), NULL), "
            "if(t = 'purchase', toDecimal64(rand() % 10000 / 100, 2), NULL), if(t = 'error', 'E500', NULL), "
            f"'synthetic', 0, number FROM numbers({first}, {min(step, count - first)})"
        )
    today = datetime.now(UTC).date()
    for back in range(8):
        rebuild_day(warehouse, tables, today - timedelta(days=back))
    return tables


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def query_latency(warehouse: ChdbWarehouse, cache: RedisCache, tables: AnalyticsTables, repeats: int) -> dict:
    dashboard = DashboardQueries(warehouse, cache, tables)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    windows = [(end - timedelta(hours=24), end), (end - timedelta(days=7), end)]
    results = {}
    for name in NAMED_QUERIES:
        uncached, cached = [], []
        for n in range(repeats):
            start, stop = windows[n % 2]
            began = time.perf_counter()
            dashboard.fetch(name, start, stop)
            uncached.append((time.perf_counter() - began) * 1000)
            dashboard.run(name, start, stop)
            began = time.perf_counter()
            dashboard.run(name, start, stop)
            cached.append((time.perf_counter() - began) * 1000)
        results[name] = (percentile(uncached, 0.5), percentile(uncached, 0.95), percentile(cached, 0.95))
    return results


def rollup_parts(warehouse: ChdbWarehouse, tables: AnalyticsTables) -> tuple[int, int]:
    """Active parts of the hour and day rollups, and how many of their partitions hold more than one."""
    found = warehouse.query_arrow(
        "SELECT sum(n) AS parts, countIf(n > 1) AS split FROM (SELECT count() AS n FROM system.parts "
        "WHERE active AND database = {database:String} "
        "AND table IN ('event_rollup_hour', 'event_rollup_day') "
        "GROUP BY table, partition)",
        {"database": tables.database},
    ).to_pylist()[0]
    return int(found["parts"] or 0), int(found["split"] or 0)


def wait_for_rollup_merges(
    warehouse: ChdbWarehouse, tables: AnalyticsTables, timeout: float = 240.0
) -> float:
    """Seconds until background merges leave one part per rollup partition (or the timeout passes)."""
    began = time.perf_counter()
    while rollup_parts(warehouse, tables)[1] and time.perf_counter() - began < timeout:
        time.sleep(1.0)
    return time.perf_counter() - began


def print_latency_table(results: dict) -> None:
    for name, (p50, p95, cached95) in results.items():
        print(f"query {name:<17} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  cached p95 {cached95:5.2f} ms")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_query_latency(warehouse: ChdbWarehouse, cache: RedisCache, events: int, repeats: int) -> None:
    began = time.perf_counter()
    tables = fill_for_queries(warehouse, events)
    print(f"generated {events:,} events for the queries in {time.perf_counter() - began:.1f} s")
    parts, split = rollup_parts(warehouse, tables)
    print(f"as landed: {parts} hour/day rollup parts, {split} partitions split; load {load_average()}")
    print_latency_table(query_latency(warehouse, cache, tables, repeats))
    waited = wait_for_rollup_merges(warehouse, tables)
    parts, split = rollup_parts(warehouse, tables)
    print(f"merged after {waited:.0f} s more: {parts} parts, {split} partitions split; load {load_average()}")
    print_latency_table(query_latency(warehouse, cache, tables, repeats))
    print(f"load average after the queries: {load_average()}")


def main() -> None:
    from analytics import start_redis

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--query-events", type=int, default=10_000_000)
    parser.add_argument("--query-repeats", type=int, default=40)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-queries-"))
    warehouse = ChdbWarehouse(path=str(folder / "chdb"))
    redis_process, redis_url = start_redis(folder)
    try:
        print(f"load average at start: {load_average()}")
        print_query_latency(warehouse, RedisCache(url=redis_url), args.query_events, args.query_repeats)
    finally:
        warehouse.close()
        redis_process.terminate()
        redis_process.wait(timeout=10)
        # 10M events leave about 1.3 GB behind.
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
