"""chdb for the suite: ClickHouse's engine inside the test process, its data in one temporary folder.

chdb runs one data folder per process, and a process cannot switch folders while a session is open,
so the whole test session shares the one folder `chdb_path` names: tests keep apart by creating
their own tables (a fresh name per test), never by opening another folder. There is no server to
point at instead: the ClickHouse server path is covered by `ClickHouseWarehouse` driven through
clickhouse-connect's own chdb interface on this same folder (see tests/resources/test_warehouse.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The data folder every chdb user in this test process shares."""
    folder: Path = tmp_path_factory.mktemp("chdb")
    return str(folder)
