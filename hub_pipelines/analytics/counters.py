"""Real-time counters: active users, trending types and products, errors and purchases, per time bucket.

Counters are written per landed chunk in one pipelined batch, guarded by a batch marker set with
`set_if_absent`: a chunk whose marker exists has been counted, so a retried run never counts it twice.
If the batch fails the marker is removed again, so the next attempt counts the chunk. Every key
lives 24 hours. The same numbers can be read back from the cache (Redis in production) or computed
from the warehouse's minute rollups (locally, where the in-process cache dies with each run).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import Cache, Warehouse

COUNTER_TTL_SECONDS = 24 * 3600
PREFIX = "rt"


def minute_bucket(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d%H%M")


def hour_bucket(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d%H")


def day_bucket(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d")


def users_key(grain: str, bucket: str) -> str:
    return f"{PREFIX}:users:{grain}:{bucket}"


def types_key(hour: str) -> str:
    return f"{PREFIX}:types:h:{hour}"


def products_key(hour: str) -> str:
    return f"{PREFIX}:products:h:{hour}"


def errors_key(minute: str) -> str:
    return f"{PREFIX}:errors:m:{minute}"


def purchases_key(minute: str) -> str:
    return f"{PREFIX}:purchases:m:{minute}"


def revenue_key(minute: str) -> str:
    return f"{PREFIX}:revenue_cents:m:{minute}"


def marker_key(batch_id: str) -> str:
    return f"{PREFIX}:counted:{batch_id}"


@dataclass(frozen=True)
class CounterUpdate:
    """What one batch of events adds to the counters, already grouped by bucket."""

    users: dict[str, set[str]]
    types: dict[str, Counter[str]]
    products: dict[str, Counter[str]]
    errors: Counter[str]
    purchases: Counter[str]
    revenue_cents: Counter[str]

    @property
    def empty(self) -> bool:
        return not self.users


def counter_update(rows: pa.Table) -> CounterUpdate:
    """Group a batch of raw_events rows (event_id, type, user_id, ts, product_id, amount) by bucket."""
    users: dict[str, set[str]] = defaultdict(set)
    types: dict[str, Counter[str]] = defaultdict(Counter)
    products: dict[str, Counter[str]] = defaultdict(Counter)
    errors: Counter[str] = Counter()
    purchases: Counter[str] = Counter()
    revenue: Counter[str] = Counter()
    columns = rows.select(["type", "user_id", "ts", "product_id", "amount"]).to_pydict()
    for kind, user, ts, product, amount in zip(*columns.values(), strict=True):
        minute, hour, day = minute_bucket(ts), hour_bucket(ts), day_bucket(ts)
        users[f"m:{minute}"].add(user)
        users[f"h:{hour}"].add(user)
        users[f"d:{day}"].add(user)
        types[hour][kind] += 1
        if product:
            products[hour][product] += 1
        if kind == "error":
            errors[minute] += 1
        elif kind == "purchase":
            purchases[minute] += 1
            revenue[minute] += int((amount or Decimal(0)) * 100)
    return CounterUpdate(dict(users), dict(types), dict(products), errors, purchases, revenue)


def write_counters(cache: Cache, batch_id: str, update: CounterUpdate) -> bool:
    """Add one batch to the counters, once: False when the batch was counted before."""
    if update.empty:
        return False
    if not cache.set_if_absent(marker_key(batch_id), b"1", ttl=COUNTER_TTL_SECONDS):
        return False
    ttl = COUNTER_TTL_SECONDS
    try:
        with cache.batch() as batch:
            for grain_bucket, members in update.users.items():
                grain, bucket = grain_bucket.split(":", 1)
                batch.hll_add(users_key(grain, bucket), sorted(members), ttl=ttl)
            for hour, counts in update.types.items():
                batch.zincr(types_key(hour), dict(counts), ttl=ttl)
            for hour, counts in update.products.items():
                batch.zincr(products_key(hour), dict(counts), ttl=ttl)
            for minute, n in update.errors.items():
                batch.incr(errors_key(minute), n, ttl=ttl)
            for minute, n in update.purchases.items():
                batch.incr(purchases_key(minute), n, ttl=ttl)
            for minute, cents in update.revenue_cents.items():
                batch.incr(revenue_key(minute), cents, ttl=ttl)
    except BaseException:
        cache.delete(marker_key(batch_id))
        raise
    return True


@dataclass(frozen=True)
class RealtimeNumbers:
    """The real-time view of one hour: distinct users, events per type, errors, purchases, revenue."""

    hour: str
    active_users: int
    events_by_type: dict[str, int]
    top_products: list[tuple[str, int]]
    errors: int
    purchases: int
    revenue_cents: int


def _minutes_of(hour_start: datetime) -> Iterable[str]:
    return (minute_bucket(hour_start + timedelta(minutes=m)) for m in range(60))


def _hour_floor(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def numbers_from_cache(cache: Cache, hour_start: datetime) -> RealtimeNumbers:
    hour_start = _hour_floor(hour_start)
    hour = hour_bucket(hour_start)
    minutes = list(_minutes_of(hour_start))

    def total(key_of) -> int:
        return sum(int(cache.get(key_of(minute)) or 0) for minute in minutes)

    return RealtimeNumbers(
        hour=hour,
        active_users=cache.hll_count(users_key("h", hour)),
        events_by_type={kind: int(score) for kind, score in cache.ztop(types_key(hour), 100)},
        top_products=[(p, int(score)) for p, score in cache.ztop(products_key(hour), 10)],
        errors=total(errors_key),
        purchases=total(purchases_key),
        revenue_cents=total(revenue_key),
    )


def numbers_from_warehouse(
    warehouse: Warehouse, tables: AnalyticsTables, hour_start: datetime
) -> RealtimeNumbers:
    """The same numbers from the hour rollup and raw events (locally there is no long-lived cache)."""
    start = _hour_floor(hour_start).replace(tzinfo=None)
    params = {"start": start}
    per_type = warehouse.query_df(
        f"SELECT type, sum(events) AS events, sum(errors) AS errors, toInt64(sum(revenue) * 100) AS cents "
        f"FROM {tables.rollup_hour} WHERE bucket = {{start:DateTime('UTC')}} GROUP BY type",
        params,
    )
    users = warehouse.query_df(
        f"SELECT uniqMerge(users) AS users FROM {tables.rollup_hour} WHERE bucket = {{start:DateTime('UTC')}}",
        params,
    )
    products = warehouse.query_df(
        f"SELECT product_id, count() AS n FROM {tables.raw_events} FINAL "
        "WHERE toStartOfHour(ts) = {start:DateTime('UTC')} AND product_id IS NOT NULL "
        "GROUP BY product_id ORDER BY n DESC, product_id DESC LIMIT 10",
        params,
    )
    events_by_type = {str(t): int(n) for t, n in zip(per_type["type"], per_type["events"], strict=True)}
    return RealtimeNumbers(
        hour=hour_bucket(hour_start),
        active_users=int(users["users"].iloc[0]) if len(users) else 0,
        events_by_type=events_by_type,
        top_products=[(str(p), int(n)) for p, n in products.itertuples(index=False)],
        errors=int(per_type["errors"].sum()),
        purchases=events_by_type.get("purchase", 0),
        revenue_cents=int(per_type["cents"].sum()),
    )
