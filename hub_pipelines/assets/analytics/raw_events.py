import json
import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.dashboard import invalidate
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.landing import UpstreamLossPager, land_and_report, landing_check_specs
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ports import Cache, Notifier, Topics, Warehouse
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.latency import ProduceStamps
from hub_pipelines.landing.offsets import OffsetRange

RAW_EVENTS_KEY = ["analytics", "raw_events"]
LATE_DAYS_METADATA = "late_days"
LANDED_POSITIONS_METADATA = "landed_positions"
# Queued runs of these workflows never wait for the warehouse, so a follower need not stop for them.
WORKFLOWS_WITHOUT_WAREHOUSE = frozenset({"media", "orders"})


def may_wait_for_warehouse(run: dg.DagsterRun) -> bool:
    """Whether a queued run may be waiting for the `warehouse` pool a follower holds: any run but the
    media and orders workflows' (a rollup, another lane's follower, a replay, a launch from the UI)."""
    return run.tags.get("hub/workflow") not in WORKFLOWS_WITHOUT_WAREHOUSE


def queued_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=100))


@dg.asset(
    key=RAW_EVENTS_KEY,
    group_name="analytics",
    kinds={"kafka", "clickhouse", "redis"},
    pool="warehouse",
    retry_policy=EXTERNAL_CALL_RETRY,
    check_specs=landing_check_specs(RAW_EVENTS_KEY),
)
@instrumented(records="run_read", failed_records=("run_dead_lettered",))
def raw_events(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: dg.ResourceParam[Topics],
    warehouse: dg.ResourceParam[Warehouse],
    cache: dg.ResourceParam[Cache],
    pager: dg.ResourceParam[Notifier],
) -> dg.MaterializeResult:
    """Site events from the events topic, landed once each in ClickHouse by the day of their own timestamp
    (and counted in the real-time counters as they land); invalid ones dead-lettered with the reason.
    A sensor's run keeps following the topic in micro-batches, each one a materialization."""
    # The events sink works in Arrow (pyarrow, and pandas with it): the landing run imports it, the
    # code location not.
    from hub_pipelines.landing.topic_landing import land_ranges
    from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES, WarehouseEventsSink

    topic = settings.EVENTS_TOPIC
    sink = WarehouseEventsSink(warehouse, configured_tables(), counters=cache)
    losses = UpstreamLossPager.for_topic(pager, topic)
    counted_before = 0

    def land(ranges: tuple[OffsetRange, ...], stamps: ProduceStamps) -> tuple[LandingCounts, dict[str, Any]]:
        nonlocal counted_before
        landed_before = len(sink.outcomes)
        started = time.perf_counter()
        # The same landing as orders/order_events, in larger chunks (see EVENTS_CHUNK_MESSAGES).
        counts = land_ranges(
            topics,
            sink,
            topic,
            ranges,
            context.run.run_id,
            EVENTS_CHUNK_MESSAGES,
            read_ahead=True,
            on_upstream_loss=losses,
            on_read=stamps,
        )
        # The batch has landed once its counters are in Redis too; cached dashboard answers go stale.
        counted = sink.finish_counting()
        if counts.landed:
            invalidate(cache)
        seconds = time.perf_counter() - started
        outcomes = sink.outcomes[landed_before:]
        days = {day for outcome in outcomes for day in outcome.event_days}
        today = datetime.now(UTC).date()
        # The newest event this run has landed so far: what the stream observer's freshness is measured from.
        newest = max((o.newest_event_ts for o in sink.outcomes if o.newest_event_ts), default=None)
        details = {
            "chunks_counted": counted - counted_before,
            "events_per_second": round(counts.read / seconds) if seconds > 0 and counts.read else 0,
            "days_touched": ",".join(str(day) for day in sorted(days)) or "none",
            LATE_DAYS_METADATA: ",".join(str(day) for day in sorted(days) if day < today),
            "newest_event_ts": newest.isoformat() if newest else "none",
            LANDED_POSITIONS_METADATA: json.dumps(
                {str(p): end for p, end in sink.landed_positions(topic).items()}
            ),
        }
        counted_before = counted
        return counts, details

    return land_and_report(
        context,
        config,
        topics,
        sink,
        topic,
        losses,
        land,
        keep_following=lambda: not any(may_wait_for_warehouse(run) for run in queued_runs(context.instance)),
    )
