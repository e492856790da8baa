"""What the two topic landing assets share: choosing the ranges, landing them (and following the topic),
reporting each batch, checking."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.alerting import LANDING, Alert, landing_alert
from hub_pipelines.assets.instrumented import step_metrics
from hub_pipelines.assets.policies import landing_latency_check, landing_latency_check_spec
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ops_metrics import record_consumer_lag
from hub_pipelines.core.ports import LandingSink, Notifier, Topics
from hub_pipelines.landing.batches import BOOK_POSITIONS_METADATA, format_book_positions
from hub_pipelines.landing.book import audit_landed_book, landing_lag
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.following import LandedBatch, MicroBatch, follow_topic
from hub_pipelines.landing.latency import LandingLatency, ProduceStamps, landing_latency
from hub_pipelines.landing.offsets import (
    OffsetRange,
    RewoundPartition,
    describe_ranges,
    parse_ranges,
    plan_next_ranges,
    rewound_partitions,
)
from hub_pipelines.landing.topic_landing import UpstreamLoss, land_ranges

logger = logging.getLogger(__name__)

RECONCILES_CHECK = "every_range_reconciles"
CONTIGUOUS_CHECK = "landed_offsets_contiguous"


def landing_check_specs(asset_key: list[str]) -> list[dg.AssetCheckSpec]:
    return [
        landing_latency_check_spec(asset_key),
        dg.AssetCheckSpec(
            RECONCILES_CHECK,
            asset=asset_key,
            description="For every landed range: read = landed + duplicates + dead-lettered, and "
            "read + gaps (transaction markers, aborted or compacted records) + lost upstream = its offsets.",
        ),
        dg.AssetCheckSpec(
            CONTIGUOUS_CHECK,
            asset=asset_key,
            description="The landed offset ranges of each partition leave no gap.",
        ),
    ]


def ranges_to_land(
    config: TopicRangeConfig, topics: Topics, sink: LandingSink, topic: str, pager: Notifier
) -> list[OffsetRange]:
    if config.ranges:
        return parse_ranges(config.ranges)
    landed = sink.landed_positions(topic)
    ends = {p: end for p, end in topics.end_offsets(topic).items() if config.lands(p)}
    for rewound in rewound_partitions(topic, landed, ends):
        del ends[rewound.partition]
        page_rewound(pager, rewound)
    return plan_next_ranges(landed, ends, config.max_messages)


def rewound_partition_alert(rewound: RewoundPartition) -> Alert:
    return landing_alert(rewound.topic, rewound.dedup_key, f"Landing {rewound.describe()}")


def page_rewound(pager: Notifier, rewound: RewoundPartition) -> None:
    pager.send([rewound_partition_alert(rewound)])
    logger.error(rewound.describe())


@dataclass
class UpstreamLossPager:
    """Pages each upstream loss a landing meets; stops the landing when the topic must halt on loss."""

    pager: Notifier
    halt: bool
    losses: list[UpstreamLoss] = field(default_factory=list)

    @classmethod
    def for_topic(cls, pager: Notifier, topic: str) -> UpstreamLossPager:
        return cls(pager, halt=topic in settings.HALT_ON_UPSTREAM_LOSS)

    def __call__(self, loss: UpstreamLoss) -> None:
        self.losses.append(loss)
        consequence = (
            "the landing stops here (HUB_HALT_ON_UPSTREAM_LOSS names the topic)"
            if self.halt
            else "booked as lost, landing goes on from there"
        )
        self.pager.send(
            [
                Alert(
                    action="trigger",
                    dedup_key=f"upstream-loss/{loss.topic}/{loss.lost.partition}/{loss.lost.start}",
                    metric=f"{loss.topic}/upstream_loss",
                    summary=f"{loss.describe()}: {consequence}",
                    group=LANDING,
                )
            ]
        )
        if self.halt:
            raise dg.Failure(
                description=f"{loss.describe()}: {consequence}",
                metadata={"lost_range": loss.lost.label(), "lost": loss.lost.size},
                allow_retries=False,
            )


LandRanges = Callable[[tuple[OffsetRange, ...], ProduceStamps], tuple[LandingCounts, dict[str, Any]]]


def land_topic_asset(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: Topics,
    sink: LandingSink,
    topic: str,
    pager: Notifier,
) -> dg.MaterializeResult:
    """Land the configured (or pending) ranges, following the topic when asked to, then check the book."""
    losses = UpstreamLossPager.for_topic(pager, topic)

    def land(ranges: tuple[OffsetRange, ...], stamps: ProduceStamps) -> tuple[LandingCounts, dict[str, Any]]:
        counts = land_ranges(
            topics,
            sink,
            topic,
            ranges,
            context.op_execution_context.run_id,
            on_upstream_loss=losses,
            on_read=stamps,
        )
        return counts, {}

    return land_and_report(context, config, topics, sink, topic, losses, land)


def land_and_report(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: Topics,
    sink: LandingSink,
    topic: str,
    losses: UpstreamLossPager,
    land: LandRanges,
    keep_following: Callable[[], bool] = lambda: False,
    relieved: Callable[[], bool] = lambda: False,
    successor_coming: Callable[[], bool] = lambda: False,
    between_batches: Callable[[], None] = lambda: None,
) -> dg.MaterializeResult:
    """Land the configured (or pending) ranges with `land`, then, for `config.follow_seconds`, what arrives.

    Each micro-batch but the last is reported as a materialization of the asset the moment it has landed
    (its ranges, counts and produce -> landed latency), so the UI shows what landed when and the topic
    sensor folds its ranges in; the last one is the step's own materialization, with the checks.
    """
    stamps = ProduceStamps()

    def land_batch(ranges: tuple[OffsetRange, ...]) -> LandedBatch:
        seen = len(losses.losses)
        stamps.take()
        counts, details = land(ranges, stamps)
        latency = landing_latency(stamps.take(), time.time())
        return LandedBatch(counts, latency, {**details, **describe_losses(losses.losses[seen:])})

    in_run = LandingCounts()
    micro_batches = 0
    newest: LandingLatency | None = None

    def tally(batch: MicroBatch) -> dict[str, dg.RawMetadataValue]:
        nonlocal in_run, micro_batches, newest
        in_run += batch.landed.counts
        micro_batches += 1
        newest = batch.landed.latency or newest
        context.log.info(
            f"{topic}: landed {describe_ranges(batch.ranges) or 'nothing pending'}: {batch.landed.counts}"
        )
        return batch_metadata(topic, batch)

    def report(batch: MicroBatch) -> None:
        context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, metadata=tally(batch)))

    last = follow_topic(
        topics,
        topic,
        ranges_to_land(config, topics, sink, topic, losses.pager),
        sink.landed_positions(topic) if config.follow_seconds > 0 else {},
        land_batch,
        report,
        config.follow_seconds,
        settings.FOLLOW_POLL_SECONDS,
        config.max_messages,
        follows=config.lands,
        longest_seconds=config.follow_longest_seconds,
        keep_following=keep_following,
        relieved=relieved,
        successor_coming=successor_coming,
        on_rewound=lambda rewound: page_rewound(losses.pager, rewound),
        between_batches=between_batches,
    )
    metadata = tally(last)
    record_landing_lag(topics, sink, topic)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "micro_batches": micro_batches,
            **{f"run_{name}": value for name, value in in_run.as_metadata().items()},
        },
        check_results=[
            *check_landed_book(sink, topic),
            landing_latency_check(newest, settings.LANDING_LATENCY_WARN_SECONDS),
        ],
    )


def batch_metadata(topic: str, batch: MicroBatch) -> dict[str, dg.RawMetadataValue]:
    latency = batch.landed.latency
    # A follower's book positions close a hole in the sensor's cursor that a batch booked but never
    # reported leaves (`Landing`); a landing that read them from its sink reports those instead.
    names_positions = batch.positions and BOOK_POSITIONS_METADATA not in batch.landed.details
    return {
        "topic": topic,
        "ranges": describe_ranges(batch.ranges) or "none",
        **batch.landed.counts.as_metadata(),
        **(latency.as_metadata() if latency else {}),
        **({BOOK_POSITIONS_METADATA: format_book_positions(batch.positions)} if names_positions else {}),
        **batch.landed.details,
    }


def describe_losses(losses: Sequence[UpstreamLoss]) -> dict[str, str]:
    return {"upstream_loss": "; ".join(loss.describe() for loss in losses) or "none"}


def record_landing_lag(topics: Topics, sink: LandingSink, topic: str) -> None:
    """Messages past the landed position of each partition, into the step's metrics."""
    record_consumer_lag(step_metrics(), topic, landing_lag(topics, sink, topic))


def check_landed_book(sink: LandingSink, topic: str) -> list[dg.AssetCheckResult]:
    audit = audit_landed_book(sink, topic)
    return [
        dg.AssetCheckResult(
            check_name=RECONCILES_CHECK,
            passed=not audit.unreconciled,
            metadata={
                "ranges": audit.ranges,
                "unreconciled": ", ".join(f"{r.label()} {c}" for r, c in audit.unreconciled[:20]) or "none",
                **{f"total_{name}": value for name, value in audit.totals.as_metadata().items()},
            },
        ),
        dg.AssetCheckResult(
            check_name=CONTIGUOUS_CHECK,
            passed=not audit.gaps,
            metadata={"gaps": "; ".join(gap.describe() for gap in audit.gaps[:20]) or "none"},
        ),
    ]
