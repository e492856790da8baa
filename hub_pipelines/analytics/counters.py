"""Real-time counters: active users, trending types and products, errors and purchases, per time bucket.

Counters are written per landed chunk together with the chunk's batch marker, in one atomic step
(`Cache.write_once`: a MULTI/EXEC transaction on Redis): a chunk whose marker exists has been counted
whole, one without a marker not at all, even when the connection is cut partway through. So a retried
run never counts a chunk twice, and the catch-up counts exactly the chunks without a marker. Every key
lives 24 hours. The landing sink counts each chunk from the rows it inserts, on a thread beside the
insert (`ChunkCounter`); a chunk it could not count (cache down, too slow) is counted afterwards from
`raw_events` by `count_uncounted_chunks`. The same numbers can be read back from the cache (Redis in
production) or computed from the warehouse's minute rollups (locally, where the in-process cache dies
with each run).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from hub_pipelines.analytics.schema import DISTINCT_MERGE, AnalyticsTables
from hub_pipelines.core.ports import Cache, CacheBatch, Warehouse

COUNTER_TTL_SECONDS = 24 * 3600
PREFIX = "rt"

logger = logging.getLogger(__name__)


def minute_bucket(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d%H%M")


def hour_bucket(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d%H")


def users_key(grain: str, bucket: str) -> str:
    return f"{PREFIX}:users:{grain}:{bucket}"


def types_key(hour: str) -> str:
    return f"{PREFIX}:types:h:{hour}"


def products_key(hour: str) -> str:
    return f"{PREFIX}:products:h:{hour}"


def events_key(minute: str) -> str:
    """The exact number of events of the minute, beside its distinct-users HyperLogLog."""
    return f"{PREFIX}:events:m:{minute}"


def errors_key(minute: str) -> str:
    return f"{PREFIX}:errors:m:{minute}"


def purchases_key(minute: str) -> str:
    return f"{PREFIX}:purchases:m:{minute}"


def revenue_key(minute: str) -> str:
    return f"{PREFIX}:revenue_cents:m:{minute}"


def marker_key(batch_id: str) -> str:
    return f"{PREFIX}:counted:{batch_id}"


def chunk_batch_id(topic: str, partition: int, start: int, end: int) -> str:
    """The counters' batch id of a landed chunk: the same for every attempt at that chunk."""
    return f"{topic}/{partition}:{start}-{end}"


@dataclass(frozen=True)
class CounterUpdate:
    """What one batch of events adds to the counters, already grouped by bucket.

    Distinct users are kept per minute only: the hour's and day's distinct counters are the unions of
    their minutes', merged in Redis (PFMERGE), so each user of a minute is sent once, not three times.
    """

    users_by_minute: dict[str, list[str]]
    types: dict[str, Counter[str]]
    products: dict[str, Counter[str]]
    errors: Counter[str]
    purchases: Counter[str]
    revenue_cents: Counter[str]
    events: Counter[str]

    @property
    def empty(self) -> bool:
        return not self.users_by_minute


def _cents(amount: pa.ChunkedArray) -> pa.ChunkedArray:
    """Amounts as whole cents, exactly (amounts carry at most two decimals); a missing amount is 0."""
    if pa.types.is_decimal(amount.type):
        # Built per call: a scalar from a Python value makes pyarrow import pandas, too slow at import.
        hundred = pa.scalar(Decimal(100), pa.decimal128(3, 0))
        as_cents = pc.multiply(pc.cast(amount, pa.decimal128(18, 2)), hundred)
    else:
        as_cents = pc.round(pc.multiply(pc.cast(amount, pa.float64()), 100))
    return pc.fill_null(pc.cast(as_cents, pa.int64()), 0)


def _floor_to(seconds: pa.ChunkedArray, size: int) -> pa.ChunkedArray:
    return pc.multiply(pc.divide(seconds, size), size)


def _labels(epochs: pa.ChunkedArray, of: Callable[[datetime], str]) -> dict[int, str]:
    return {epoch: of(datetime.fromtimestamp(epoch, UTC)) for epoch in pc.unique(epochs).to_pylist()}


def _tally(table: pa.Table, keys: list[str]) -> list[tuple]:
    """(key..., rows) for each distinct combination of the key columns."""
    grouped = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    return list(zip(*(grouped.column(name).to_pylist() for name in [*keys, "count_all"]), strict=True))


def counter_update(rows: pa.Table) -> CounterUpdate:
    """Group a batch of raw_events rows (type, user_id, ts, product_id, amount) by bucket.

    Grouped by Arrow, so only the distinct buckets, users and products of the batch reach Python.
    """
    if rows.num_rows == 0:
        return CounterUpdate({}, {}, {}, Counter(), Counter(), Counter(), Counter())
    seconds = pc.cast(pc.cast(rows.column("ts"), pa.timestamp("s", "UTC"), safe=False), pa.int64())
    table = pa.table(
        {
            "minute": _floor_to(seconds, 60),
            "hour": _floor_to(seconds, 3600),
            "type": pc.cast(rows.column("type"), pa.string()),
            "user": pc.cast(rows.column("user_id"), pa.string()),
            "product": pc.cast(rows.column("product_id"), pa.string()),
            "cents": _cents(rows.column("amount")),
        }
    )
    distinct = table.group_by("minute", use_threads=False).aggregate([("user", "distinct")])
    minute_label = _labels(table.column("minute"), minute_bucket)
    users_by_minute = {
        minute_label[minute]: members
        for minute, members in zip(
            distinct.column("minute").to_pylist(), distinct.column("user_distinct").to_pylist(), strict=True
        )
    }
    hour_label = _labels(table.column("hour"), hour_bucket)
    types: dict[str, Counter[str]] = defaultdict(Counter)
    for hour, kind, n in _tally(table, ["hour", "type"]):
        types[hour_label[hour]][kind] += n
    products: dict[str, Counter[str]] = defaultdict(Counter)
    with_product = table.filter(pc.fill_null(pc.not_equal(table.column("product"), ""), False))
    for hour, product, n in _tally(with_product, ["hour", "product"]):
        products[hour_label[hour]][product] += n
    errors = Counter(
        {
            minute_label[m]: n
            for m, n in _tally(table.filter(pc.equal(table.column("type"), "error")), ["minute"])
        }
    )
    purchases: Counter[str] = Counter()
    revenue: Counter[str] = Counter()
    bought = table.filter(pc.equal(table.column("type"), "purchase"))
    per_minute = bought.group_by("minute", use_threads=False).aggregate([([], "count_all"), ("cents", "sum")])
    for minute, n, cents in zip(
        *(per_minute.column(c).to_pylist() for c in ("minute", "count_all", "cents_sum")), strict=True
    ):
        purchases[minute_label[minute]] += n
        revenue[minute_label[minute]] += cents
    events = Counter({minute_label[m]: n for m, n in _tally(table, ["minute"])})
    return CounterUpdate(users_by_minute, dict(types), dict(products), errors, purchases, revenue, events)


def write_counters(cache: Cache, batch_id: str, update: CounterUpdate) -> bool:
    """Add one batch to the counters, once: False when the batch was counted before."""
    if update.empty:
        return False
    return cache.write_once(
        marker_key(batch_id), lambda batch: _queue_counters(batch, update), ttl=COUNTER_TTL_SECONDS
    )


def _queue_counters(batch: CacheBatch, update: CounterUpdate) -> None:
    ttl = COUNTER_TTL_SECONDS
    # Bucket labels nest (YYYYMMDD, YYYYMMDDHH, YYYYMMDDHHMM): a label's prefix is its parent.
    minutes_by_hour: dict[str, list[str]] = defaultdict(list)
    for minute, members in update.users_by_minute.items():
        batch.hll_add(users_key("m", minute), members, ttl=ttl)
        minutes_by_hour[minute[:10]].append(users_key("m", minute))
    hours_by_day: dict[str, list[str]] = defaultdict(list)
    for hour, minute_keys in minutes_by_hour.items():
        batch.hll_merge(users_key("h", hour), minute_keys, ttl=ttl)
        hours_by_day[hour[:8]].append(users_key("h", hour))
    for day, hour_keys in hours_by_day.items():
        batch.hll_merge(users_key("d", day), hour_keys, ttl=ttl)
    for hour, counts in update.types.items():
        batch.zincr(types_key(hour), dict(counts), ttl=ttl)
    for hour, counts in update.products.items():
        batch.zincr(products_key(hour), dict(counts), ttl=ttl)
    for minute, n in update.events.items():
        batch.incr(events_key(minute), n, ttl=ttl)
    for minute, n in update.errors.items():
        batch.incr(errors_key(minute), n, ttl=ttl)
    for minute, n in update.purchases.items():
        batch.incr(purchases_key(minute), n, ttl=ttl)
    for minute, cents in update.revenue_cents.items():
        batch.incr(revenue_key(minute), cents, ttl=ttl)


class ChunkCounter:
    """Writes chunks' counters on a thread of its own while the caller goes on landing.

    One write is in flight at a time; the next `start` waits for it, at most `timeout_seconds`, so
    the counters of one group of chunks are written while the next group is looked up and inserted. A
    cache that is down or slow delays landing by the timeout once, after which chunks are left
    uncounted (their markers stay absent) until the cache answers again, and `count_uncounted_chunks`
    counts them from the warehouse. `finish` waits for the last write.
    """

    def __init__(self, cache: Cache, timeout_seconds: float = 5.0) -> None:
        self.cache, self.timeout_seconds = cache, timeout_seconds
        self._writer: threading.Thread | None = None
        self._counted: set[str] = set()

    def start(self, batches: Sequence[tuple[str, pa.Table]]) -> bool:
        """Begin counting each (batch id, rows) once the previous write is done; False when it is not
        done within the timeout (these batches are then left to the catch-up)."""
        if not self._previous_done():
            return False
        self._writer = threading.Thread(
            target=self._write,
            args=(list(batches),),
            name=f"counters {batches[0][0] if batches else ''}",
            daemon=True,
        )
        self._writer.start()
        return True

    def _previous_done(self) -> bool:
        if self._writer is not None:
            self._writer.join(self.timeout_seconds)
        return self._writer is None or not self._writer.is_alive()

    def _write(self, batches: list[tuple[str, pa.Table]]) -> None:
        for batch_id, rows in batches:
            try:
                write_counters(self.cache, batch_id, counter_update(rows))
                self._counted.add(batch_id)
            except Exception:
                logger.warning(
                    "counters of %s not written; counted later from the warehouse", batch_id, exc_info=True
                )

    def finish(self) -> set[str]:
        """Wait for the last write; the batch ids whose counters are in (now or by an earlier attempt)."""
        self._previous_done()
        return set(self._counted)


@dataclass(frozen=True)
class CatchUpCounts:
    """What `count_uncounted_chunks` found: chunks counted at landing, chunks it counted, their events."""

    counted_at_landing: int
    counted_now: int
    events_counted: int


def count_uncounted_chunks(
    warehouse: Warehouse, tables: AnalyticsTables, cache: Cache, run_id: str
) -> CatchUpCounts:
    """Count, from `raw_events`, every chunk the run landed whose counters are not in the cache yet."""
    chunks = warehouse.query_df(
        f"SELECT topic, partition, start_offset, end_offset, event_days, landed FROM {tables.landed_ranges} "
        "FINAL WHERE run_id = {run:String} AND landed > 0 ORDER BY partition, start_offset",
        {"run": run_id},
    )
    at_landing = now = events = 0
    for topic, partition, start, end, days, landed in chunks.itertuples(index=False):
        counted = count_booked_chunk(warehouse, tables, cache, topic, partition, start, end, list(days))
        if counted is None:
            at_landing += 1
            events += int(landed)
        else:
            now += 1
            events += counted
    return CatchUpCounts(at_landing, now, events)


def count_booked_chunk(
    warehouse: Warehouse,
    tables: AnalyticsTables,
    cache: Cache,
    topic: str,
    partition: int,
    start: int,
    end: int,
    days: Sequence[date],
) -> int | None:
    """Count a booked chunk from its rows in `raw_events` (on `days`); the events counted now, or None
    when its marker says it was counted already."""
    batch_id = chunk_batch_id(topic, partition, start, end)
    if cache.get(marker_key(batch_id)) is not None:
        return None
    rows = warehouse.query_df(
        f"SELECT type, user_id, ts, product_id, amount FROM {tables.raw_events} "
        "WHERE toDate(ts) IN {days:Array(Date)} AND topic = {topic:String} AND partition = {partition:Int32} "
        "AND offset >= {start:Int64} AND offset < {end:Int64}",
        {"days": list(days), "topic": topic, "partition": partition, "start": start, "end": end},
    )
    update = counter_update(pa.Table.from_pandas(rows, preserve_index=False))
    return len(rows) if write_counters(cache, batch_id, update) else None


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


def events_per_minute_from_cache(cache: Cache, hour_start: datetime) -> dict[str, int]:
    """The exact event count of each minute of the hour that has events, as the landing counted them."""
    counts = {
        minute: int(cache.get(events_key(minute)) or 0) for minute in _minutes_of(_hour_floor(hour_start))
    }
    return {minute: n for minute, n in counts.items() if n}


def events_per_minute_in_warehouse(
    warehouse: Warehouse, tables: AnalyticsTables, hour_start: datetime
) -> dict[str, int]:
    """The rows of each minute of the hour in `raw_events` as stored (no FINAL: a duplicate row counts)."""
    start = _hour_floor(hour_start).replace(tzinfo=None)
    rows = warehouse.query_arrow(
        f"SELECT formatDateTime(toStartOfMinute(ts), '%Y%m%d%H%i') AS minute, count() AS n "
        f"FROM {tables.raw_events} WHERE toStartOfHour(ts) = {{start:DateTime('UTC')}} GROUP BY minute",
        {"start": start},
    )
    return dict(zip(rows.column("minute").to_pylist(), map(int, rows.column("n").to_pylist()), strict=True))


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
        f"SELECT {DISTINCT_MERGE}(users) AS users FROM {tables.rollup_hour} WHERE bucket = {{start:DateTime('UTC')}}",
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
