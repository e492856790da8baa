"""What a topic's landed book says after a landing: ranges whose counts do not add up, offsets never
landed, the totals, and how far each partition's end is past what has landed."""

from __future__ import annotations

from dataclasses import dataclass

from hub_pipelines.core.ports import LandingSink, Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange, RangeGap, find_gaps


@dataclass(frozen=True)
class LandedBookAudit:
    ranges: int
    unreconciled: list[tuple[OffsetRange, LandingCounts]]
    """Ranges where read != landed + duplicates + dead-lettered, or whose counts miss some of its offsets."""
    gaps: list[RangeGap]
    totals: LandingCounts


def audit_landed_book(sink: LandingSink, topic: str) -> LandedBookAudit:
    book = sink.landed_ranges(topic)
    return LandedBookAudit(
        ranges=len(book),
        unreconciled=[(r, c) for r, c in book if not c.reconciles or c.offsets != r.size],
        gaps=find_gaps(r for r, _ in book),
        totals=sum((c for _, c in book), LandingCounts()),
    )


def landing_lag(topics: Topics, sink: LandingSink, topic: str) -> dict[int, int]:
    """Messages past the landed position, per partition."""
    landed = sink.landed_positions(topic)
    return {
        partition: max(0, end - landed.get(partition, 0))
        for partition, end in topics.end_offsets(topic).items()
    }
