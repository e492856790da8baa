import json
import time
from datetime import UTC, datetime

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.alerting import Notifier
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.landing import (
    UpstreamLossPager,
    check_landed_book,
    landing_check_specs,
    ranges_to_land,
    record_landing_lag,
)
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ports import Cache, Topics, Warehouse
from hub_pipelines.landing.offsets import describe_ranges

RAW_EVENTS_KEY = ["analytics", "raw_events"]
LATE_DAYS_METADATA = "late_days"
LANDED_POSITIONS_METADATA = "landed_positions"


@dg.asset(
    key=RAW_EVENTS_KEY,
    group_name="analytics",
    kinds={"kafka", "clickhouse", "redis"},
    pool="warehouse",
    retry_policy=EXTERNAL_CALL_RETRY,
    check_specs=landing_check_specs(RAW_EVENTS_KEY),
)
@instrumented(records="read", failed_records=("dead_lettered",))
def raw_events(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: dg.ResourceParam[Topics],
    warehouse: dg.ResourceParam[Warehouse],
    cache: dg.ResourceParam[Cache],
    pager: dg.ResourceParam[Notifier],
) -> dg.MaterializeResult:
    """Site events from the events topic, landed once each in ClickHouse by the day of their own timestamp
    (and counted in the real-time counters as they land); invalid ones dead-lettered with the reason."""
    # The events sink works in Arrow (pyarrow, and pandas with it): the landing run imports it, the
    # code location not.
    from hub_pipelines.landing.topic_landing import land_ranges
    from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES, WarehouseEventsSink

    topic = settings.EVENTS_TOPIC
    sink = WarehouseEventsSink(warehouse, configured_tables(), counters=cache)
    ranges = ranges_to_land(config, topics, sink, topic)
    losses = UpstreamLossPager.for_topic(pager, topic)
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
    )
    chunks_counted = sink.finish_counting()
    seconds = time.perf_counter() - started
    today = datetime.now(UTC).date()
    late_days = sorted(day for day in sink.touched_days if day < today)
    newest = max((o.newest_event_ts for o in sink.outcomes if o.newest_event_ts), default=None)
    context.log.info(f"{topic}: landed {describe_ranges(ranges) or 'nothing pending'}: {counts}")
    record_landing_lag(topics, sink, topic)
    return dg.MaterializeResult(
        metadata={
            "topic": topic,
            "ranges": describe_ranges(ranges) or "none",
            **counts.as_metadata(),
            **losses.metadata(),
            "chunks_counted": chunks_counted,
            "events_per_second": round(counts.read / seconds) if seconds > 0 and counts.read else 0,
            "days_touched": ",".join(str(day) for day in sorted(sink.touched_days)) or "none",
            LATE_DAYS_METADATA: ",".join(str(day) for day in late_days),
            "newest_event_ts": newest.isoformat() if newest else "none",
            LANDED_POSITIONS_METADATA: json.dumps(
                {str(p): end for p, end in sink.landed_positions(topic).items()}
            ),
        },
        check_results=check_landed_book(sink, topic),
    )
