"""A real Redis server for the suite: `redis-server` on a free loopback port, no persistence.

Set `HUB_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379/0`) to use an existing server instead of
starting one. Tests never flush the server: each test gets its own key prefix from
`redis_key_prefix`, and every key containing that prefix is deleted when the test ends, so a shared
server keeps its other data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.services import free_port, require_binary, start_process, stop_process, wait_until

REDIS_URL_ENV = "HUB_TEST_REDIS_URL"


def _answers_ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running Redis server (redis://127.0.0.1:PORT/0)."""
    existing = os.environ.get(REDIS_URL_ENV)
    if existing:
        if not _answers_ping(existing):
            pytest.fail(f"{REDIS_URL_ENV}={existing} does not answer PING", pytrace=False)
        yield existing
        return

    binary = require_binary("redis-server", install="apt-get install -y redis-server")
    folder: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    process = start_process(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
        ],
        folder / "redis.log",
    )  # fmt: skip
    try:
        wait_until(lambda: _answers_ping(url), "redis-server", timeout=30, process=process)
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A raw client on the test server, for assertions the code under test does not expose."""
    client = redis.Redis.from_url(redis_server)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A prefix unique to this test; keys containing it are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    stale = list(redis_client.scan_iter(match=f"*{prefix}*", count=1000))
    if stale:
        redis_client.delete(*stale)
