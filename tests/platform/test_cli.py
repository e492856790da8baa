"""`hub-pipelines migrate` (the deploy step that brings the production database to the newest schema) and
`hub-pipelines demo`'s setup of the local environment."""

from __future__ import annotations

import sqlalchemy as sa

from hub_pipelines.cli import main
from hub_pipelines.demo.feeder import DEMO_PRODUCTS
from hub_pipelines.orders.tables import products
from hub_pipelines.resources.sql_database import SqliteDatabase


def test_migrate_brings_the_production_database_to_the_newest_schema(postgres_database, monkeypatch):
    monkeypatch.setenv("HUB_ENV", "prod")
    monkeypatch.setenv("HUB_DATABASE_URL", postgres_database.url)
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    engine = sa.create_engine(postgres_database.url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"topic_inbox", "landed_ranges", "orders", "ledger_entries", "media_variants"} <= tables


def test_migrate_without_a_database_url_says_what_is_missing(monkeypatch, capsys):
    monkeypatch.setenv("HUB_ENV", "prod")
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2
    assert "HUB_DATABASE_URL is not set" in capsys.readouterr().err


def test_demo_puts_the_products_its_orders_buy_in_the_local_database(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_ENV", "local")
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for _ in range(2):
        assert main(["demo", "--orders", "1", "--events", "1"]) == 0
    database = SqliteDatabase(path=str(tmp_path / "hub.sqlite3"))
    with database.transaction() as connection:
        rows = connection.execute(sa.select(products.c.product_id, products.c.unit_price_minor)).all()
    assert sorted(rows) == sorted((p, int(price.replace(".", ""))) for p, _name, price in DEMO_PRODUCTS)
