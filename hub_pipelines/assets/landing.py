"""What the two topic landing assets share: choosing the ranges, landing them, reporting, checking."""

from __future__ import annotations

import dagster as dg

from hub_pipelines.assets.instrumented import step_metrics
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ops_metrics import record_consumer_lag
from hub_pipelines.core.ports import Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import (
    OffsetRange,
    describe_ranges,
    find_gaps,
    parse_ranges,
    plan_next_ranges,
)
from hub_pipelines.landing.topic_landing import LandingSink, land_ranges

RECONCILES_CHECK = "every_range_reconciles"
CONTIGUOUS_CHECK = "landed_offsets_contiguous"


def landing_check_specs(asset_key: list[str]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            RECONCILES_CHECK,
            asset=asset_key,
            description="For every landed range: read = landed + duplicates + dead-lettered.",
        ),
        dg.AssetCheckSpec(
            CONTIGUOUS_CHECK,
            asset=asset_key,
            description="The landed offset ranges of each partition leave no gap.",
        ),
    ]


def ranges_to_land(
    config: TopicRangeConfig, topics: Topics, sink: LandingSink, topic: str
) -> list[OffsetRange]:
    if config.ranges:
        return parse_ranges(config.ranges)
    return plan_next_ranges(sink.landed_positions(topic), topics.end_offsets(topic), config.max_messages)


def land_topic_asset(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: Topics,
    sink: LandingSink,
    topic: str,
) -> dg.MaterializeResult:
    """Land the configured (or pending) ranges, then check the whole book of landed ranges."""
    ranges = ranges_to_land(config, topics, sink, topic)
    counts = land_ranges(topics, sink, topic, ranges, context.run_id)
    context.log.info(f"{topic}: landed {describe_ranges(ranges) or 'nothing pending'}: {counts}")
    record_landing_lag(topics, sink, topic)
    return dg.MaterializeResult(
        metadata={
            "topic": topic,
            "ranges": describe_ranges(ranges) or "none",
            **counts.as_metadata(),
        },
        check_results=check_landed_book(sink, topic),
    )


def record_landing_lag(topics: Topics, sink: LandingSink, topic: str) -> dict[int, int]:
    """Messages past the landed position of each partition, into the step's metrics."""
    landed = sink.landed_positions(topic)
    lag = {
        partition: max(0, end - landed.get(partition, 0))
        for partition, end in topics.end_offsets(topic).items()
    }
    record_consumer_lag(step_metrics(), topic, lag)
    return lag


def check_landed_book(sink: LandingSink, topic: str) -> list[dg.AssetCheckResult]:
    book = sink.landed_ranges(topic)
    unreconciled = [(r, c) for r, c in book if not c.reconciles]
    gaps = find_gaps(r for r, _ in book)
    totals = sum((c for _, c in book), LandingCounts())
    return [
        dg.AssetCheckResult(
            check_name=RECONCILES_CHECK,
            passed=not unreconciled,
            metadata={
                "ranges": len(book),
                "unreconciled": ", ".join(f"{r.label()} {c}" for r, c in unreconciled[:20]) or "none",
                **{f"total_{name}": value for name, value in totals.as_metadata().items()},
            },
        ),
        dg.AssetCheckResult(
            check_name=CONTIGUOUS_CHECK,
            passed=not gaps,
            metadata={"gaps": "; ".join(gap.describe() for gap in gaps[:20]) or "none"},
        ),
    ]
