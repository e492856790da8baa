"""Names, tunables and settings, read from the environment here and nowhere else.

Production's connection settings for external services are fields of the resources, fed by
`dg.EnvVar` in `definitions.py`. This module holds what the workflows themselves call things, and the
few addresses code outside the resources needs (the CLI's database, `make run`'s Redis, the UI's
address for alert links).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def hub_env() -> str:
    """'local' (embedded defaults, no servers) or 'prod' (real services from environment variables)."""
    env = _env("HUB_ENV", "local").lower()
    if env not in ("local", "prod"):
        raise ValueError(f"HUB_ENV must be 'local' or 'prod', not {env!r}")
    return env


def data_dir() -> Path:
    """Where the local environment keeps its embedded databases, object folders and topic logs."""
    return Path(_env("HUB_DATA_DIR", str(PROJECT_ROOT / ".hub"))).resolve()


def database_url() -> str | None:
    """HUB_DATABASE_URL: the production SQL database, for the operator commands outside Dagster."""
    return os.environ.get("HUB_DATABASE_URL") or None


@dataclass(frozen=True)
class S3Connection:
    endpoint_url: str | None
    region_name: str
    access_key_id: str | None
    secret_access_key: str | None


def s3_connection() -> S3Connection:
    """HUB_S3_ENDPOINT_URL, HUB_S3_REGION and the HUB_S3_* keys: production's object storage, for the
    operator commands outside Dagster (definitions.py feeds the resource the same variables, the keys
    as `dg.EnvVar`)."""
    return S3Connection(
        endpoint_url=os.environ.get("HUB_S3_ENDPOINT_URL") or None,
        region_name=_env("HUB_S3_REGION", "us-east-1"),
        access_key_id=os.environ.get("HUB_S3_ACCESS_KEY_ID"),
        secret_access_key=os.environ.get("HUB_S3_SECRET_ACCESS_KEY"),
    )


def dagster_home() -> str | None:
    """DAGSTER_HOME: the Dagster instance an operator command works on (the one `make run` serves)."""
    return os.environ.get("DAGSTER_HOME") or None


def order_signing_secret() -> str:
    """HUB_ORDER_SIGNING_SECRET; locally the demo feeder and the ledger share a fixed demo secret."""
    return _env("HUB_ORDER_SIGNING_SECRET", "local-demo-secret")


def local_redis_url() -> str | None:
    """The Redis `make run` starts on a Unix socket (HUB_REDIS_URL); None runs the cache in process."""
    return os.environ.get("HUB_REDIS_URL") or None


def analytics_database() -> str:
    """HUB_ANALYTICS_DATABASE: the ClickHouse database of the analytics tables ('' = the connection's)."""
    return os.environ.get("HUB_ANALYTICS_DATABASE", "")


def pushgateway_url() -> str | None:
    """HUB_PUSHGATEWAY_URL: where each step pushes its run metrics; None pushes nothing."""
    return os.environ.get("HUB_PUSHGATEWAY_URL") or None


def json_logs_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """HUB_LOG_FORMAT=json: run and process logs as one JSON object per line."""
    return (environ if environ is not None else os.environ).get("HUB_LOG_FORMAT", "").lower() == "json"


def dagster_ui_url() -> str:
    """The Dagster UI's address for links in alerts: HUB_DAGSTER_URL (its external address), else where
    `make run` serves it (HUB_UI_HOST:HUB_UI_PORT, which `scripts/run_local.sh` exports to every process)."""
    external = os.environ.get("HUB_DAGSTER_URL")
    if external:
        return external.rstrip("/")
    return f"http://{_env('HUB_UI_HOST', '127.0.0.1')}:{_env('HUB_UI_PORT', '3000')}"


# The local environment's PII keyring (customer e-mail and phone, raw order events in the inbox and
# dead letters of the SQLite file under .hub). A fixed key, so rows written by one `make run` open in
# the next; it is public, which is fine for demo data and nothing else.
LOCAL_DEMO_PII_KEYS = "local1:B7H+y0qD+dvNnl5gIbEOxTgahpB5rbghChHpOKomOvU="


def pii_keys() -> str:
    """HUB_PII_KEYS ('kid:<base64 32 bytes>,...', the first one seals); locally the demo key when unset."""
    keys = os.environ.get("HUB_PII_KEYS")
    if keys:
        return keys
    if hub_env() == "local":
        return LOCAL_DEMO_PII_KEYS
    raise ValueError("HUB_PII_KEYS must be set when HUB_ENV=prod")


UPLOADS_BUCKET = _env("HUB_UPLOADS_BUCKET", "uploads")
UPLOADS_PREFIX = _env("HUB_UPLOADS_PREFIX", "incoming/")
ORDERS_TOPIC = _env("HUB_ORDERS_TOPIC", "orders")
EVENTS_TOPIC = _env("HUB_EVENTS_TOPIC", "events")
# Where the outbox relay announces order.created / order.paid / order.failed.
ORDER_EVENTS_OUT_TOPIC = _env("HUB_ORDER_EVENTS_OUT_TOPIC", "order-events")
TOPIC_PARTITIONS = int(_env("HUB_TOPIC_PARTITIONS", "3"))


def _topic_lanes(text: str) -> dict[str, int]:
    lanes = {}
    for pair in filter(None, text.split(",")):
        topic, _, count = pair.partition("=")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"HUB_TOPIC_LANES: {pair!r} is not 'topic=<lanes, at least 1>'")
        lanes[topic.strip()] = int(count)
    return lanes


# Lanes per topic ('orders=4,events=2'; one lane for a topic not named): partition p is landed and
# processed by lane p % lanes, each lane by runs of its own beside the other lanes' (landing/lanes.py).
TOPIC_LANES = _topic_lanes(_env("HUB_TOPIC_LANES", ""))


def topic_lanes(topic: str) -> int:
    return TOPIC_LANES.get(topic, 1)


# Topics whose landing stops (and pages) when messages were deleted upstream before they were landed;
# other topics book the loss, page, and go on from the earliest offset still there.
HALT_ON_UPSTREAM_LOSS = frozenset(filter(None, _env("HUB_HALT_ON_UPSTREAM_LOSS", "").split(",")))

# The first day of the daily partitions (orders/daily_revenue, analytics/daily_rollups). Fixed, so a
# day's partition key names the same day on every deploy; days before it can be added by moving it back.
DAILY_PARTITIONS_START = _env("HUB_DAILY_PARTITIONS_START", "2026-01-01")

UPLOADS_PER_TICK = int(_env("HUB_UPLOADS_PER_TICK", "100"))
UPLOADS_LOOKBACK_SECONDS = float(_env("HUB_UPLOADS_LOOKBACK_SECONDS", "10"))
# A settled upload's original (published or rejected) moves from the uploads prefix to the settled
# prefix, so the sensor lists only uploads that still wait for their run. Its dynamic partition is
# retired once it has been settled this long, so the UI does not grow with history either;
# `hub-pipelines uploads restore` brings one back.
UPLOADS_SETTLED_PREFIX = _env("HUB_UPLOADS_SETTLED_PREFIX", "settled/")
UPLOADS_RETENTION_DAYS = float(_env("HUB_UPLOADS_RETENTION_DAYS", "7"))
UPLOADS_RETENTION_CRON = _env("HUB_UPLOADS_RETENTION_CRON", "47 3 * * *")
ORDERS_PER_RUN = int(_env("HUB_ORDERS_PER_RUN", "20000"))
EVENTS_PER_RUN = int(_env("HUB_EVENTS_PER_RUN", "500000"))
SENSOR_INTERVAL_SECONDS = int(_env("HUB_SENSOR_INTERVAL_SECONDS", "5"))
# How long a sensor's landing run keeps following its topic after its ranges, in micro-batches one poll
# apart (docs/architecture.md, "Following a topic"). Events follow for two minutes: the run's process
# start is paid once per ~120 micro-batches (chdb, one process at a time, is lent to a waiting run at
# the next poll, not at the window's end).
EVENTS_FOLLOW_SECONDS = float(_env("HUB_EVENTS_FOLLOW_SECONDS", "120"))
# A busy follower whose time is up follows for another HUB_EVENTS_FOLLOW_SECONDS (against a ClickHouse
# server only while no other analytics run is queued for the slots it holds: a rollup, another lane, a
# replay), up to this long: each run start leaves the topic unfollowed for its queue, launch and
# warm-up. New code reaches the next run.
EVENTS_FOLLOW_LONGEST_SECONDS = float(_env("HUB_EVENTS_FOLLOW_LONGEST_SECONDS", "600"))
# The events sensor starts a follower's successor this long before the follower's window ends; the
# successor takes over once it is up (its launch and imports take seconds to tens of seconds under load),
# so the topic is never left unfollowed for a run start (docs/architecture.md, "A handoff").
EVENTS_HANDOFF_LEAD_SECONDS = float(_env("HUB_EVENTS_HANDOFF_LEAD_SECONDS", "30"))
# A chdb follower lends the warehouse at its poll to the runs waiting for it; each loan leaves threads and
# memory behind in its process (chdb's engine keeps ~6 threads and ~2 MB per session closed, measured
# on chdb 26.9), so one that lent this many times follows no window past its current one and its
# successor starts afresh.
EVENTS_LOANS_PER_FOLLOWER = int(_env("HUB_EVENTS_LOANS_PER_FOLLOWER", "50"))
# A successor waits at most this long for its predecessor to end: a local run killed outright is never
# marked ended, and the chunk booking makes going on safe.
HANDOFF_WAIT_SECONDS = float(_env("HUB_HANDOFF_WAIT_SECONDS", "60"))
# chdb admits one process per data folder: a run opening it waits this long for its turn (first come first
# served; a follower lends it at its next poll), and a follower that lent it as long for its turn back.
WAREHOUSE_LOCK_WAIT_SECONDS = float(_env("HUB_WAREHOUSE_LOCK_WAIT_SECONDS", "300"))
# Orders follow too, and their runs place each micro-batch's orders through the lane's ledger as soon as
# it landed: a run per batch would put a sensor tick, the queue and a process start before every payment.
# A busy follower follows on, window after window, up to the longest time (no pool waits for it).
ORDERS_FOLLOW_SECONDS = float(_env("HUB_ORDERS_FOLLOW_SECONDS", "120"))
ORDERS_FOLLOW_LONGEST_SECONDS = float(_env("HUB_ORDERS_FOLLOW_LONGEST_SECONDS", "600"))
FOLLOW_POLL_SECONDS = float(_env("HUB_FOLLOW_POLL_SECONDS", "1"))
# A landing run ends by itself once its following is over (its longest time) and its last batch placed
# (an events follower may also wait once for the warehouse, WAREHOUSE_LOCK_WAIT_SECONDS, which its bound
# adds); one still running this much later is failed by run monitoring (`dagster/max_runtime`) and
# paged as a failed run. Dagster fails a run whose worker died only when something notices it (locally,
# the code server that started the process), and once nothing did: in a chaos cut an orders run stayed
# STARTED for 21 minutes after its worker's kill -9, a PostgreSQL and a daemon restart before, holding
# its lane.
LANDING_RUN_SPARE_SECONDS = float(_env("HUB_LANDING_RUN_SPARE_SECONDS", "300"))
# A ledger batch that left orders open (gateway unavailable, outcome unknown) gets a catch-up run this
# long after it when no orders run comes: not below the ledger's `stale_after_s` (60), since the
# reconciliation takes only orders untouched that long.
ORDERS_RECONCILE_AFTER_SECONDS = float(_env("HUB_ORDERS_RECONCILE_AFTER_SECONDS", "60"))
# The landing assets warn (check severity WARN) when their newest batch's slowest message took longer
# than this from its producer to landed.
LANDING_LATENCY_WARN_SECONDS = float(_env("HUB_LANDING_LATENCY_WARN_SECONDS", "10"))

# Processed inbox rows and dead letters hold raw order events (sealed); they are purged after these.
INBOX_RETENTION_DAYS = float(_env("HUB_INBOX_RETENTION_DAYS", "7"))
DEAD_LETTER_RETENTION_DAYS = float(_env("HUB_DEAD_LETTER_RETENTION_DAYS", "30"))
PII_RETENTION_CRON = _env("HUB_PII_RETENTION_CRON", "17 3 * * *")

# A stand-in for production's ClickHouse server on a machine that cannot run one clickhouse-connect
# speaks to (the chaos run, docs/operations.md): under HUB_ENV=prod the warehouse is then chdb on this
# folder. chdb opens a folder from one process at a time, so every run then executes its steps in its
# own process, one after another, as locally. Never set in a real deployment.
PROD_WAREHOUSE_CHDB_PATH = os.environ.get("HUB_PROD_WAREHOUSE_CHDB_PATH") or None


def warehouse_admits_one_process() -> bool:
    """Whether the warehouse is chdb (local, or prod's stand-in), which opens its folder from one
    process at a time."""
    return hub_env() == "local" or PROD_WAREHOUSE_CHDB_PATH is not None


def runs_steps_in_one_process() -> bool:
    """Whether each run executes its steps in its own process (local, or prod on chdb)."""
    return hub_env() == "local" or PROD_WAREHOUSE_CHDB_PATH is not None
