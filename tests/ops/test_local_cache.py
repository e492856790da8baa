"""`make run`'s cache: a private redis-server on a Unix socket, shared by every run's process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hub_pipelines.definitions import local_resources
from hub_pipelines.resources.cache import InProcessCache, RedisCache
from tests.services import require_binary, start_process, stop_process, wait_until

HOUR = "2026-12-06T10:00:00+00:00"

# One run's process: it counts a batch of events into the local environment's cache and exits.
COUNT_A_BATCH = f"""
import sys
from datetime import datetime
import pyarrow as pa
from hub_pipelines.analytics.counters import counter_update, write_counters
from hub_pipelines.resources.local_cache import local_cache
ts = datetime.fromisoformat("{HOUR}")
rows = pa.table({{
    "type": ["page_view", "purchase", "error"],
    "user_id": [f"u-{{sys.argv[1]}}-1", f"u-{{sys.argv[1]}}-2", f"u-{{sys.argv[1]}}-1"],
    "ts": pa.array([ts, ts, ts], pa.timestamp("ms", "UTC")),
    "product_id": [None, "p-100", None],
    "amount": [None, 12.5, None],
}})
assert write_counters(local_cache(), "batch-" + sys.argv[1], counter_update(rows))
"""
# A later run's process: it reads the hour's real-time numbers back.
READ_THE_HOUR = f"""
import json
from dataclasses import asdict
from datetime import datetime
from hub_pipelines.analytics.counters import numbers_from_cache
from hub_pipelines.resources.local_cache import local_cache
print(json.dumps(asdict(numbers_from_cache(local_cache(), datetime.fromisoformat("{HOUR}")))))
"""


@pytest.fixture
def redis_socket(tmp_path: Path) -> Iterator[Path]:
    """redis-server as scripts/run_local.sh starts it: no TCP port, a Unix socket in the data folder."""
    binary = require_binary("redis-server", install="apt-get install -y redis-server")
    socket = tmp_path / "redis.sock"
    process = start_process(
        [binary, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
         "--dir", str(tmp_path), "--save", "", "--daemonize", "no"],
        tmp_path / "redis.log",
    )  # fmt: skip
    try:
        wait_until(lambda: redis.Redis(unix_socket_path=str(socket)).ping(), "redis-server", process=process)
        yield socket
    finally:
        stop_process(process)


def in_a_new_process(code: str, *args: str, redis_url: str) -> str:
    environment = {**os.environ, "HUB_ENV": "local", "HUB_REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_counters_counted_by_two_runs_are_read_by_a_third_process(redis_socket: Path) -> None:
    url = f"unix://{redis_socket}"
    in_a_new_process(COUNT_A_BATCH, "a", redis_url=url)
    in_a_new_process(COUNT_A_BATCH, "b", redis_url=url)
    numbers = json.loads(in_a_new_process(READ_THE_HOUR, redis_url=url))
    assert numbers["active_users"] == 4
    assert numbers["events_by_type"] == {"page_view": 2, "purchase": 2, "error": 2}
    assert numbers["purchases"] == 2
    assert numbers["revenue_cents"] == 2500


def test_local_environment_caches_in_the_redis_named_by_hub_redis_url(
    redis_socket: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "hub"))
    monkeypatch.setenv("HUB_REDIS_URL", f"unix://{redis_socket}")
    cache = local_resources()["cache"]
    assert isinstance(cache, RedisCache)
    cache.set("greeting", b"hello")
    assert redis.Redis(unix_socket_path=str(redis_socket)).get("greeting") == b"hello"

    monkeypatch.delenv("HUB_REDIS_URL")
    assert isinstance(local_resources()["cache"], InProcessCache)
