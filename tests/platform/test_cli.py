"""`hub-pipelines migrate`: the deploy step that brings the production database to the newest schema."""

from __future__ import annotations

import sqlalchemy as sa

from hub_pipelines.cli import main


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
