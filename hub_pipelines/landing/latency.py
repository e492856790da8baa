"""How long messages took from their producer to the landing: the freshness figure of one landed batch.

Each message carries the time its producer stamped it (Kafka's CreateTime; the local topic log stamps
it at append). A batch's latency is its landing time minus those stamps: the median and the maximum
over the batch, in seconds. A batch of replayed messages is as late as its messages are old.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from hub_pipelines.core.ports import TopicMessage

P50_METADATA = "produce_to_landed_p50_s"
MAX_METADATA = "produce_to_landed_max_s"


@dataclass(frozen=True)
class LandingLatency:
    """Produce -> landed of one batch's messages."""

    messages: int
    p50_seconds: float
    max_seconds: float

    def as_metadata(self) -> dict[str, float]:
        return {P50_METADATA: round(self.p50_seconds, 3), MAX_METADATA: round(self.max_seconds, 3)}


def landing_latency(produced_ms: Sequence[int], landed_at: float) -> LandingLatency | None:
    """Latency of messages produced at `produced_ms` (epoch milliseconds) and landed at `landed_at`
    (epoch seconds); None for a batch without stamped messages."""
    if not produced_ms:
        return None
    waits = [max(0.0, landed_at - stamp / 1000) for stamp in produced_ms]
    return LandingLatency(len(waits), statistics.median(waits), max(waits))


@dataclass
class ProduceStamps:
    """Collects the producer stamps of the messages a landing reads (from its reader thread)."""

    stamps: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, messages: Sequence[TopicMessage]) -> None:
        stamped = [m.timestamp_ms for m in messages if m.timestamp_ms is not None]
        with self._lock:
            self.stamps.extend(stamped)

    def take(self) -> list[int]:
        """The stamps collected so far, forgetting them."""
        with self._lock:
            stamps, self.stamps = self.stamps, []
        return stamps
