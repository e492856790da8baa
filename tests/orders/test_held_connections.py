"""Held PostgreSQL connections for a batch's hot transactions."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.held_connections import HeldConnections
from hub_pipelines.orders.intake import parse_order_event
from hub_pipelines.orders.pricing import PriceRejected, price_order
from hub_pipelines.orders.reservation import IntakePosition, reserve_order
from hub_pipelines.orders.tables import orders, products
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.support import encode, order_event, seed_catalog


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


def test_an_autocommit_slot_commits_each_statement_and_gives_the_connection_back_as_it_was(
    ledger_database: PostgresDatabase,
) -> None:
    slots = HeldConnections(ledger_database, 1, autocommit=True)
    with slots.slot() as held:
        assert held is not None
        held.execute("CREATE TABLE autocommit_probe (n integer)")
        held.execute("INSERT INTO autocommit_probe VALUES (1)")
        status = held.info.transaction_status
        with ledger_database.transaction() as other:
            seen_by_another_connection = other.execute(sa.text("SELECT n FROM autocommit_probe")).all()
    slots.close()
    with ledger_database.transaction() as cleanup:
        cleanup.execute(sa.text("DROP TABLE autocommit_probe"))

    assert status == psycopg.pq.TransactionStatus.IDLE
    assert seen_by_another_connection == [(1,)]
    assert not held.autocommit and not held.closed


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


@pytest.mark.parametrize("held", [True, False], ids=["held-connection", "pooled-connection"])
def test_reservation_of_a_product_repriced_since_pricing_is_refused_by_name_and_writes_nothing(
    ledger_database: PostgresDatabase, held: bool
) -> None:
    catalog = Catalog(ledger_database)
    seed_catalog(catalog)
    request = parse_order_event(encode(order_event(items=[("p-cup", 1, "12.50"), ("p-frother", 1, "59.00")])))
    priced = price_order(request, catalog.products(item.product_id for item in request.items))
    catalog.set_price("p-cup", 1500)
    position = IntakePosition("orders", 0, 1, request.event_id)
    slots = HeldConnections(ledger_database, 1)

    with slots.slot() as connection, pytest.raises(PriceRejected) as refused:
        reserve_order(ledger_database, position, priced, connection=connection if held else None)
    slots.close()

    assert str(refused.value) == "price mismatch for Ceramic cup: sent 12.50, catalog 15.00"
    with ledger_database.transaction() as check:
        written = check.execute(
            sa.select(sa.func.count())
            .select_from(orders)
            .where(orders.c.idempotency_key == request.idempotency_key)
        ).scalar_one()
        stock = dict(check.execute(sa.select(products.c.product_id, products.c.stock)).all())
    assert written == 0
    assert stock["p-cup"] == 1000 and stock["p-frother"] == 1000
