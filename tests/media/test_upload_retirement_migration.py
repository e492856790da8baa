"""Migration 0010 on PostgreSQL: uploads settled before it count as settled when last seen."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from hub_pipelines.core.schema import alembic_config, upgrade_schema
from tests.services.postgres import PostgresServer

BEFORE = "0009_media_upload_outcomes"


def test_uploads_settled_before_the_migration_take_their_last_seen_time(postgres_database: PostgresServer):
    engine = sa.create_engine(postgres_database.sqlalchemy_url("psycopg"))
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), BEFORE)
        seen = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        with engine.begin() as connection:
            for key, status in (("old~published.jpg", "published"), ("old~working.jpg", "landed")):
                connection.execute(
                    sa.text(
                        "INSERT INTO media_uploads (partition_key, object_key, size, etag, first_seen_at, "
                        "last_seen_at, status) VALUES (:key, :key, 1, 'e', :seen, :seen, :status)"
                    ),
                    {"key": key, "seen": seen, "status": status},
                )

        upgrade_schema(engine)

        with engine.connect() as connection:
            rows = dict(
                connection.execute(sa.text("SELECT partition_key, settled_at FROM media_uploads"))
                .tuples()
                .all()
            )
        assert rows == {"old~published.jpg": seen, "old~working.jpg": None}
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), BEFORE)
    finally:
        engine.dispose()
