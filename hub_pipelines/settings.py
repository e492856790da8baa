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
