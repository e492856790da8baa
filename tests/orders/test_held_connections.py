"""Held PostgreSQL connections for a batch's hot transactions."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from hub_pipelines.orders.held_connections import HeldConnections
from hub_pipelines.resources.sql_database import PostgresDatabase


def test_a_slot_keeps_its_connection_at_serializable_and_gives_it_back_at_its_former_level(
    ledger_database: PostgresDatabase,
) -> None:
    slots = HeldConnections(ledger_database, 1)
    with slots.slot() as first:
        assert first is not None
        with first.transaction():
            level = first.execute("SHOW transaction_isolation").fetchone()
    with slots.slot() as second:
        assert second is not None
    slots.close()

    assert level == ("serializable",)
    assert second is first
    assert first.isolation_level is not psycopg.IsolationLevel.SERIALIZABLE and not first.closed
    with first.transaction():
        assert first.execute("SHOW transaction_isolation").fetchone() == ("read committed",)


def test_a_slot_whose_connection_broke_connects_again(ledger_database: PostgresDatabase) -> None:
    slots = HeldConnections(ledger_database, 1)
    with slots.slot() as first:
        assert first is not None
        broken = first.info.backend_pid
    with ledger_database.transaction() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": broken})
    with pytest.raises(psycopg.OperationalError), slots.slot() as dead:
        assert dead is not None
        dead.execute("SELECT 1")
    with slots.slot() as fresh:
        assert fresh is not None
        value = fresh.execute("SELECT 1").fetchone()
        pid = fresh.info.backend_pid
    slots.close()

    assert value == (1,) and pid != broken
