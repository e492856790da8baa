"""The analytics tables in ClickHouse: the same statements for chdb and a ClickHouse server.

`raw_events` holds every landed event once, partitioned by the day of its own timestamp (so a late
event lands in its day), kept two years. Replays are stopped three times over: the landing sink skips
chunks it has booked and event ids already stored, each insert carries a deduplication token (the
table keeps a window of recent tokens), and the engine is a ReplacingMergeTree on the event's minute
and id, so even a row that slipped through is collapsed by merges and by `FINAL` reads. An event's
identity is its id within its minute: producers retry by resending the same payload, and the minute
in front of the id lets a chunk find its already-stored ids through the primary index (random ids
alone are spread over every granule of a day).

Materialized views fill the high-resolution series (per second, 90 days) and the minute rollup as
rows are inserted; the hour rollup is fed from the minute rollup's rows and the day rollup from the
hour's, so each chunk is aggregated from raw rows twice (series and minutes), not once per grain.
The day rollup (mergeable states) lets dashboard windows of many days merge a state per day instead
of 24 per day. Because they see every inserted block, they rely on the sink never
inserting an event twice, which it guarantees per topic; the daily rollups are rebuilt from
`raw_events FINAL` and are the reference the checks compare against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub_pipelines import settings
from hub_pipelines.core.ports import Warehouse

# Distinct users and sessions in the rollups are HyperLogLog-style states of 2^13 registers (about 1.2%
# standard error, exact for small sets): fixed-size states merge in microseconds, where the exact-up-to-
# 65,536 `uniq` states grew with every user and made a week of hourly states take 300 ms to merge.
_DISTINCT = "uniqCombined64"
_DISTINCT_REGISTERS_LOG2 = 13
DISTINCT_STATE = f"AggregateFunction({_DISTINCT}({_DISTINCT_REGISTERS_LOG2}), String)"
DISTINCT_MERGE = f"{_DISTINCT}Merge({_DISTINCT_REGISTERS_LOG2})"
_DISTINCT_OF = f"{_DISTINCT}State({_DISTINCT_REGISTERS_LOG2})"
_DISTINCT_MERGE_STATE = f"{_DISTINCT}MergeState({_DISTINCT_REGISTERS_LOG2})"

_RAW_EVENTS = """
CREATE TABLE IF NOT EXISTS {db}raw_events (
    event_id String,
    type LowCardinality(String),
    user_id String,
    session_id String,
    ts DateTime64(3, 'UTC'),
    path LowCardinality(Nullable(String)),
    product_id LowCardinality(Nullable(String)),
    amount Nullable(Decimal(18, 2)),
    error_code LowCardinality(Nullable(String)),
    topic LowCardinality(String),
    partition Int32,
    offset Int64,
    landed_at DateTime64(3, 'UTC') DEFAULT now64(3),
    id_hash UInt64 MATERIALIZED cityHash64(event_id)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (toStartOfMinute(ts), event_id)
TTL toDateTime(ts) + INTERVAL 2 YEAR
SETTINGS non_replicated_deduplication_window = 10000
"""

# The landing's duplicate lookup reads this 8-byte hash of every stored id in the chunk's time span
# instead of the ids themselves (a third of the bytes, hashed once at insert, not per lookup).
_RAW_EVENTS_ID_HASH = """
ALTER TABLE {db}raw_events ADD COLUMN IF NOT EXISTS id_hash UInt64 MATERIALIZED cityHash64(event_id)
"""

_DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS {db}event_dead_letters (
    topic LowCardinality(String),
    partition Int32,
    offset Int64,
    event_id Nullable(String),
    reason String,
    payload String,
    dead_lettered_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(dead_lettered_at)
ORDER BY (topic, partition, offset)
TTL toDateTime(dead_lettered_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000
"""

_LANDED_RANGES = """
CREATE TABLE IF NOT EXISTS {db}event_landed_ranges (
    topic LowCardinality(String),
    partition Int32,
    start_offset Int64,
    end_offset Int64,
    run_id String,
    read UInt32,
    landed UInt32,
    duplicates UInt32,
    dead_lettered UInt32,
    gaps UInt32 DEFAULT 0,
    lost UInt32 DEFAULT 0,
    event_days Array(Date),
    newest_event_ts Nullable(DateTime64(3, 'UTC')),
    landed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, start_offset, end_offset)
SETTINGS non_replicated_deduplication_window = 10000
"""

# Warehouses created before the book counted broker gaps and upstream loss apart.
_LANDED_RANGES_GAPS_AND_LOSS = """
ALTER TABLE {db}event_landed_ranges
    ADD COLUMN IF NOT EXISTS gaps UInt32 DEFAULT 0 AFTER dead_lettered,
    ADD COLUMN IF NOT EXISTS lost UInt32 DEFAULT 0 AFTER gaps
"""

_SERIES_1S = """
CREATE TABLE IF NOT EXISTS {db}event_series_1s (
    second DateTime('UTC'),
    type LowCardinality(String),
    events UInt64,
    revenue Decimal(38, 2),
    errors UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toDate(second)
ORDER BY (type, second)
TTL second + INTERVAL 90 DAY
"""

_SERIES_1S_VIEW = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}event_series_1s_mv TO {db}event_series_1s AS
SELECT toStartOfSecond(ts) AS second, type, count() AS events,
       sum(ifNull(amount, 0)) AS revenue, countIf(type = 'error') AS errors
FROM {db}raw_events
GROUP BY second, type
"""


# The hour and day rollups the dashboard reads. A row carries two distinct-count states (about 12 KB), so
# 32 rows make a granule of the size ClickHouse aims for with ordinary rows, and a window reads the states
# of its own hours rather than a whole partition's. Every landing batch adds a part to the newest
# partition, and a window merges the states of every part it touches: parts a minute old are merged
# (a partition is a few MB at most), where the ordinary merge policy leaves a handful of small parts
# alone for a long time.
_FORCE_MERGE_AGE = "min_age_to_force_merge_seconds = 60"
_DASHBOARD_ROLLUP_SETTINGS = f"index_granularity = 32, {_FORCE_MERGE_AGE}"


def _force_merges_on(name: str) -> str:
    """The merge age for a rollup created before it was set (a table's granularity is fixed at creation)."""
    return f"ALTER TABLE {{db}}{name} MODIFY SETTING {_FORCE_MERGE_AGE}"


def _rollup_table(
    name: str, bucket_type: str, ttl: str, partition: str = "toDate(bucket)", settings: str = ""
) -> str:
    settings_clause = f"\nSETTINGS {settings}" if settings else ""
    return f"""
CREATE TABLE IF NOT EXISTS {{db}}{name} (
    bucket {bucket_type},
    type LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    users {DISTINCT_STATE},
    sessions {DISTINCT_STATE},
    revenue SimpleAggregateFunction(sum, Decimal(38, 2)),
    errors SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY {partition}
ORDER BY (bucket, type)
TTL toDateTime(bucket) + INTERVAL {ttl}{settings_clause}
"""


def _rollup_view(name: str, bucket: str) -> str:
    return f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}{name}_mv TO {{db}}{name} AS
SELECT {bucket}(ts) AS bucket, type,
       toUInt64(count()) AS events, {_DISTINCT_OF}(user_id) AS users, {_DISTINCT_OF}(session_id) AS sessions,
       toDecimal128(sum(ifNull(amount, 0)), 2) AS revenue, toUInt64(countIf(type = 'error')) AS errors
FROM {{db}}raw_events
GROUP BY bucket, type
"""


def _coarser_rollup_view(name: str, bucket: str, source: str) -> str:
    """A rollup fed from the next finer rollup's inserted rows: a few thousand per chunk, not every event."""
    return f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}{name}_mv TO {{db}}{name} AS
SELECT {bucket}(bucket) AS bucket, type,
       sum(events) AS events, {_DISTINCT_MERGE_STATE}(users) AS users,
       {_DISTINCT_MERGE_STATE}(sessions) AS sessions,
       sum(revenue) AS revenue, sum(errors) AS errors
FROM {{db}}{source}
GROUP BY bucket, type
"""


_DAILY_ROLLUPS = """
CREATE TABLE IF NOT EXISTS {db}event_rollups_daily (
    day Date,
    type LowCardinality(String),
    events UInt64,
    users UInt64,
    sessions UInt64,
    revenue Decimal(38, 2),
    errors UInt64,
    rebuilt_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (day, type)
TTL day + INTERVAL 2 YEAR
"""

_DAILY_PRODUCT_ROLLUPS = """
CREATE TABLE IF NOT EXISTS {db}product_rollups_daily (
    day Date,
    product_id String,
    add_to_cart UInt64,
    purchases UInt64,
    revenue Decimal(38, 2),
    buyers UInt64,
    rebuilt_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (day, product_id)
TTL day + INTERVAL 2 YEAR
"""

# Tables older warehouses have and this schema no longer uses, dropped by `ensure`. event_id_probes:
# landing wrote each chunk's ids there to look them up; they travel with the lookup now (external data).
_RETIRED_TABLES = ("event_id_probes",)

_DETECTOR_STATE = """
CREATE TABLE IF NOT EXISTS {db}anomaly_detector_state (
    metric String,
    last_bucket DateTime('UTC'),
    state String,
    updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY metric
"""

_STATEMENTS: tuple[str, ...] = (
    _RAW_EVENTS,
    _RAW_EVENTS_ID_HASH,
    _DEAD_LETTERS,
    _LANDED_RANGES,
    _LANDED_RANGES_GAPS_AND_LOSS,
    _SERIES_1S,
    _SERIES_1S_VIEW,
    _rollup_table("event_rollup_minute", "DateTime('UTC')", "90 DAY"),
    _rollup_view("event_rollup_minute", "toStartOfMinute"),
    _rollup_table("event_rollup_hour", "DateTime('UTC')", "2 YEAR", settings=_DASHBOARD_ROLLUP_SETTINGS),
    _force_merges_on("event_rollup_hour"),
    _coarser_rollup_view("event_rollup_hour", "toStartOfHour", "event_rollup_minute"),
    _rollup_table(
        "event_rollup_day",
        "DateTime('UTC')",
        "2 YEAR",
        partition="toYYYYMM(bucket)",
        settings=_DASHBOARD_ROLLUP_SETTINGS,
    ),
    _force_merges_on("event_rollup_day"),
    _coarser_rollup_view("event_rollup_day", "toStartOfDay", "event_rollup_hour"),
    _DAILY_ROLLUPS,
    _DAILY_PRODUCT_ROLLUPS,
    _DETECTOR_STATE,
    *(f"DROP TABLE IF EXISTS {{db}}{name}" for name in _RETIRED_TABLES),
)

_OBJECTS = tuple(
    re.findall(r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS \{db\}(\w+)", "".join(_STATEMENTS))
)


@dataclass(frozen=True)
class AnalyticsTables:
    """The analytics tables of one ClickHouse database ('' = the connection's default database)."""

    database: str = ""

    def _name(self, table: str) -> str:
        return f"{self.database}.{table}" if self.database else table

    @property
    def raw_events(self) -> str:
        return self._name("raw_events")

    @property
    def dead_letters(self) -> str:
        return self._name("event_dead_letters")

    @property
    def landed_ranges(self) -> str:
        return self._name("event_landed_ranges")

    @property
    def series_1s(self) -> str:
        return self._name("event_series_1s")

    @property
    def rollup_minute(self) -> str:
        return self._name("event_rollup_minute")

    @property
    def rollup_hour(self) -> str:
        return self._name("event_rollup_hour")

    @property
    def rollup_day(self) -> str:
        return self._name("event_rollup_day")

    @property
    def daily_rollups(self) -> str:
        return self._name("event_rollups_daily")

    @property
    def daily_product_rollups(self) -> str:
        return self._name("product_rollups_daily")

    @property
    def detector_state(self) -> str:
        return self._name("anomaly_detector_state")

    def statements(self) -> list[str]:
        prefix = f"{self.database}." if self.database else ""
        creates = [f"CREATE DATABASE IF NOT EXISTS {self.database}"] if self.database else []
        return creates + [statement.replace("{db}", prefix) for statement in _STATEMENTS]

    def ensure(self, warehouse: Warehouse) -> None:
        """Create every analytics table and view that does not exist yet, and bring older ones up to date.

        Every landing run does this: one catalogue query when all is in place, where running the ~20
        statements again cost about 60 ms (the ALTERs rewrite table metadata even when nothing changes).
        """
        if self._up_to_date(warehouse):
            return
        for statement in self.statements():
            warehouse.execute(statement)

    def _up_to_date(self, warehouse: Warehouse) -> bool:
        database = "{database:String}" if self.database else "currentDatabase()"
        found = warehouse.query_df(
            f"SELECT name, create_table_query FROM system.tables WHERE database = {database}",
            {"database": self.database} if self.database else None,
        )
        created = dict(zip(found["name"], found["create_table_query"], strict=True))
        if not set(_OBJECTS) <= created.keys() or not created.keys().isdisjoint(_RETIRED_TABLES):
            return False
        return (
            "id_hash" in created["raw_events"]
            and "lost" in created["event_landed_ranges"]
            and all(_FORCE_MERGE_AGE in created[name] for name in ("event_rollup_hour", "event_rollup_day"))
        )


def configured_tables() -> AnalyticsTables:
    """The tables the assets use: in HUB_ANALYTICS_DATABASE, or the connection's default database."""
    return AnalyticsTables(settings.analytics_database())
