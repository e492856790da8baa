import json
from typing import Any

import dagster as dg

from hub_pipelines import settings
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
    from hub_pipelines.landing.events_landing import EventsLanding
    from hub_pipelines.landing.warehouse_events import WarehouseEventsSink

    topic = settings.EVENTS_TOPIC
    sink = WarehouseEventsSink(warehouse, configured_tables(), counters=cache)
    losses = UpstreamLossPager.for_topic(pager, topic)
    landing = EventsLanding(topics, sink, cache, topic, context.run.run_id, losses)

    def land(ranges: tuple[OffsetRange, ...], stamps: ProduceStamps) -> tuple[LandingCounts, dict[str, Any]]:
        batch = landing.land(ranges, stamps)
        return batch.counts, {
            "chunks_counted": batch.chunks_counted,
            "events_per_second": batch.events_per_second,
            "days_touched": ",".join(map(str, batch.days_touched)) or "none",
            LATE_DAYS_METADATA: ",".join(map(str, batch.late_days)),
            "newest_event_ts": batch.newest_event_ts.isoformat() if batch.newest_event_ts else "none",
            LANDED_POSITIONS_METADATA: json.dumps({str(p): end for p, end in batch.landed_positions.items()}),
        }

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
