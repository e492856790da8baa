"""One micro-batch of the events topic landed in the warehouse, as the `analytics/raw_events` step lands it:
its counters in the cache, cached dashboard answers made stale, and what the batch touched."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from hub_pipelines.analytics.dashboard import invalidate
from hub_pipelines.core.ports import Cache, TopicMessage, Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import UpstreamLoss, land_ranges
from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES, WarehouseEventsSink


@dataclass(frozen=True)
class EventsBatch:
    """What one micro-batch landed: counts, chunks whose counters it wrote, speed, the days its events fall
    on (and those before today), the newest event this run has landed so far and the landed positions."""

    counts: LandingCounts
    chunks_counted: int
    events_per_second: int
    days_touched: list[date]
    late_days: list[date]
    newest_event_ts: datetime | None
    landed_positions: dict[int, int]


@dataclass
class EventsLanding:
    """Lands the events topic's ranges micro-batch by micro-batch, for one run."""

    topics: Topics
    sink: WarehouseEventsSink
    cache: Cache
    topic: str
    run_id: str
    on_upstream_loss: Callable[[UpstreamLoss], None]
    _counted_before: int = field(default=0, init=False)

    def land(
        self, ranges: Sequence[OffsetRange], on_read: Callable[[Sequence[TopicMessage]], None]
    ) -> EventsBatch:
        landed_before = len(self.sink.outcomes)
        started = time.perf_counter()
        # The same landing as orders/order_events, in larger chunks (see EVENTS_CHUNK_MESSAGES).
        counts = land_ranges(
            self.topics,
            self.sink,
            self.topic,
            ranges,
            self.run_id,
            EVENTS_CHUNK_MESSAGES,
            read_ahead=True,
            on_upstream_loss=self.on_upstream_loss,
            on_read=on_read,
        )
        # The batch has landed once its counters are in the cache too; cached dashboard answers go stale.
        counted = self.sink.finish_counting()
        if counts.landed:
            invalidate(self.cache)
        seconds = time.perf_counter() - started
        days = sorted({day for outcome in self.sink.outcomes[landed_before:] for day in outcome.event_days})
        today = datetime.now(UTC).date()
        # The newest event this run has landed so far: what the stream observer's freshness is measured from.
        newest = max((o.newest_event_ts for o in self.sink.outcomes if o.newest_event_ts), default=None)
        batch = EventsBatch(
            counts=counts,
            chunks_counted=counted - self._counted_before,
            events_per_second=round(counts.read / seconds) if seconds > 0 and counts.read else 0,
            days_touched=days,
            late_days=[day for day in days if day < today],
            newest_event_ts=newest,
            landed_positions=self.sink.landed_positions(self.topic),
        )
        self._counted_before = counted
        return batch
