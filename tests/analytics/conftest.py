"""Fixtures for the analytics tests: the suite's chdb folder, one fresh ClickHouse database per test,
and a cache of each kind (in process and Redis) for the tests that take `cache`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import Cache
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import InProcessCache, RedisCache


@pytest.fixture(scope="session")
def warehouse(chdb_path: str) -> Iterator[ChdbWarehouse]:
    chdb = ChdbWarehouse(path=chdb_path)
    try:
        yield chdb
    finally:
        chdb.close()


@pytest.fixture
def tables(warehouse: ChdbWarehouse) -> Iterator[AnalyticsTables]:
    """The analytics tables in a database of this test's own, dropped afterwards."""
    created = AnalyticsTables(database=f"analytics_{uuid.uuid4().hex[:10]}")
    created.ensure(warehouse)
    try:
        yield created
    finally:
        warehouse.execute(f"DROP DATABASE IF EXISTS {created.database}")


@pytest.fixture(params=["in_process", "redis"])
def cache(request, redis_server: str, redis_key_prefix: str) -> Cache:
    if request.param == "redis":
        return RedisCache(url=redis_server, key_prefix=redis_key_prefix)
    return InProcessCache()
