"""What one batch of the ledger did: per-order outcomes summed into the numbers an operator plots."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from hub_pipelines.orders.catalog import CacheStats

OUTCOMES = (
    "paid", "failed", "payment_unknown", "deferred", "rejected", "duplicate", "skipped", "retry", "parked",
)  # fmt: skip
"""`retry`: an internal error, counted, taken again next batch; `parked`: dead-lettered after the last."""


@dataclass(frozen=True)
class OrderOutcome:
    """One event's or one reconciled order's result; `seconds` is its processing time."""

    status: str
    seconds: float
    order_id: str | None = None
    amount_minor: int = 0
    currency: str | None = None
    items: int = 0
    payment_attempts: int = 0
    serialization_retries: int = 0
    reason: str | None = None
    reason_kind: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class BatchReport:
    counts: dict[str, int]
    rejections: dict[str, int]
    reconciled: dict[str, int]
    value_minor: dict[str, int]
    orders_processed: int
    items: int
    order_seconds: tuple[float, ...]
    cache: CacheStats
    payment_calls: int
    payment_retries: int
    serialization_retries: int
    breaker_state: str
    elapsed_s: float
    in_flight_limit: int = 0
    in_flight_limit_peak: int = 0
    outcomes: tuple[OrderOutcome, ...] = field(repr=False, default=())

    @classmethod
    def of(
        cls,
        outcomes: Sequence[OrderOutcome],
        reconciled: Sequence[OrderOutcome],
        *,
        cache: CacheStats,
        breaker_state: str,
        elapsed_s: float,
        in_flight_limit: int = 0,
        in_flight_limit_peak: int = 0,
        groups_lost_to_races: int = 0,
    ) -> BatchReport:
        """`groups_lost_to_races`: group reservations that lost a serialization race (their orders were
        then placed one by one), each one serialization retry beside the orders' own."""
        everything = [*outcomes, *reconciled]
        value: Counter[str] = Counter()
        for outcome in everything:
            if outcome.status == "paid" and outcome.currency:
                value[outcome.currency] += outcome.amount_minor
        placed = [
            o for o in outcomes if o.status not in ("rejected", "duplicate", "skipped", "retry", "parked")
        ]
        return cls(
            counts=dict(Counter(o.status for o in outcomes)),
            rejections=dict(Counter(o.reason_kind or "unknown" for o in outcomes if o.status == "rejected")),
            reconciled=dict(Counter(o.status for o in reconciled)),
            value_minor=dict(value),
            orders_processed=len(placed),
            items=sum(o.items for o in placed),
            order_seconds=tuple(o.seconds for o in placed),
            cache=cache,
            payment_calls=sum(1 for o in everything if o.payment_attempts),
            payment_retries=sum(max(0, o.payment_attempts - 1) for o in everything),
            serialization_retries=groups_lost_to_races + sum(o.serialization_retries for o in outcomes),
            breaker_state=breaker_state,
            elapsed_s=elapsed_s,
            in_flight_limit=in_flight_limit,
            in_flight_limit_peak=in_flight_limit_peak,
            outcomes=tuple(everything),
        )

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def items_per_order(self) -> float:
        return self.items / self.orders_processed if self.orders_processed else 0.0

    def order_ms(self, q: float) -> float:
        return percentile(self.order_seconds, q) * 1000

    def as_metadata(self) -> dict[str, float | int | str]:
        metadata: dict[str, float | int | str] = {
            "events": sum(self.counts.values()),
            "orders_processed": self.orders_processed,
            **{f"orders_{status}": self.count(status) for status in OUTCOMES},
            **{f"reconciled_{status}": n for status, n in sorted(self.reconciled.items())},
            **{f"rejected_{kind}": n for kind, n in sorted(self.rejections.items())},
            **{f"total_value_minor_{currency}": n for currency, n in sorted(self.value_minor.items())},
            "items_per_order": round(self.items_per_order, 3),
            "order_ms_p50": round(self.order_ms(50), 3),
            "order_ms_p95": round(self.order_ms(95), 3),
            "order_ms_p99": round(self.order_ms(99), 3),
            "cache_hit_rate": round(self.cache.hit_rate, 4),
            "cache_lookups": self.cache.lookups,
            "payment_calls": self.payment_calls,
            "payment_retries": self.payment_retries,
            "serialization_retries": self.serialization_retries,
            "breaker_state": self.breaker_state,
            "elapsed_s": round(self.elapsed_s, 3),
            "in_flight_limit": self.in_flight_limit,
            "in_flight_limit_peak": self.in_flight_limit_peak,
        }
        return metadata
