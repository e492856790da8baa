"""The order tables' SQLAlchemy descriptions match what migration 0002 creates, and the ledger is append-only."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub_pipelines.core.schema import schema_heads
from hub_pipelines.orders import tables
from hub_pipelines.orders.ledger import Entry, post
from hub_pipelines.resources.sql_database import PostgresDatabase


def test_order_tables_match_the_migrated_schema_and_heads_stay_single(
    ledger_database: PostgresDatabase,
) -> None:
    with ledger_database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), tables.metadata)
    ours = set(tables.metadata.tables)
    relevant = [d for d in differences if _table_of(d) in ours]
    assert relevant == []
    assert len(schema_heads()) == 1


def test_ledger_entries_refuse_update_and_delete(ledger_database: PostgresDatabase) -> None:
    with ledger_database.transaction() as connection:
        post(connection, "o-1", "USD", "test", [Entry("a", debit_minor=5), Entry("b", credit_minor=5)])
    for statement in ("UPDATE ledger_entries SET memo = 'changed'", "DELETE FROM ledger_entries"):
        with (
            pytest.raises(sa.exc.DBAPIError, match="append-only"),
            ledger_database.transaction() as connection,
        ):
            connection.execute(sa.text(statement))


def _table_of(difference: object) -> str | None:
    """The table a difference from compare_metadata is about (its entries come in several shapes)."""
    if isinstance(difference, list):
        return _table_of(difference[0])
    assert isinstance(difference, tuple)
    subject = difference[1]
    if isinstance(subject, sa.Table):
        return subject.name
    table = getattr(subject, "table", None)
    if table is not None:
        return table.name
    return str(difference[2]) if len(difference) > 2 else None
