"""Names and tunables shared by assets and sensors, read once from the environment.

Connection settings for external services are not here: they are fields of the resources, fed by
`dg.EnvVar` in `definitions.py`. This module holds what the workflows themselves call things.
"""

from __future__ import annotations

import os
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
# Topics whose landing stops (and pages) when messages were deleted upstream before they were landed;
# other topics book the loss, page, and go on from the earliest offset still there.
HALT_ON_UPSTREAM_LOSS = frozenset(filter(None, _env("HUB_HALT_ON_UPSTREAM_LOSS", "").split(",")))

UPLOADS_PER_TICK = int(_env("HUB_UPLOADS_PER_TICK", "100"))
UPLOADS_LOOKBACK_SECONDS = float(_env("HUB_UPLOADS_LOOKBACK_SECONDS", "10"))
ORDERS_PER_RUN = int(_env("HUB_ORDERS_PER_RUN", "20000"))
EVENTS_PER_RUN = int(_env("HUB_EVENTS_PER_RUN", "500000"))
SENSOR_INTERVAL_SECONDS = int(_env("HUB_SENSOR_INTERVAL_SECONDS", "5"))
# How long a sensor's landing run keeps following its topic after its ranges, in micro-batches one poll
# apart (docs/architecture.md, "Following a topic"). Events follow for two minutes: the run's process
# start is paid once per ~120 micro-batches, and the warehouse pool (chdb: one process at a time) is
# handed to a waiting rollup run at least that often. Orders do not follow by default: the ledger runs
# after the landing step in the same run, so following would hold payments back by as long.
EVENTS_FOLLOW_SECONDS = float(_env("HUB_EVENTS_FOLLOW_SECONDS", "120"))
ORDERS_FOLLOW_SECONDS = float(_env("HUB_ORDERS_FOLLOW_SECONDS", "0"))
FOLLOW_POLL_SECONDS = float(_env("HUB_FOLLOW_POLL_SECONDS", "1"))
# The landing assets warn (check severity WARN) when their newest batch's slowest message took longer
# than this from its producer to landed.
LANDING_LATENCY_WARN_SECONDS = float(_env("HUB_LANDING_LATENCY_WARN_SECONDS", "10"))

# Processed inbox rows and dead letters hold raw order events (sealed); they are purged after these.
INBOX_RETENTION_DAYS = float(_env("HUB_INBOX_RETENTION_DAYS", "7"))
DEAD_LETTER_RETENTION_DAYS = float(_env("HUB_DEAD_LETTER_RETENTION_DAYS", "30"))
PII_RETENTION_CRON = _env("HUB_PII_RETENTION_CRON", "17 3 * * *")
