"""The database schema, managed by the Alembic migrations shipped inside the package.

`upgrade_schema(engine)` brings a database to the newest revision of every migration branch. It is
safe to call from several processes at once: the first one migrates, the others wait and then find
nothing left to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from hub_pipelines.core.sql import SQLITE_BEGIN_OPTION, UnsupportedDialect, require_hub_sqlite_engine

# Alembic loads when a schema is checked or migrated, not with the database resources that can do it.
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# Any fixed 64-bit number works; this one spells "hub_sche" so it is recognisable in pg_locks.
_MIGRATION_LOCK_KEY = int.from_bytes(b"hub_sche", "big") & 0x7FFF_FFFF_FFFF_FFFF


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration for the packaged migrations, built in code so it works from a wheel.

    Also what `alembic.command.revision(alembic_config(), message=...)` needs to start a new migration.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def schema_heads() -> set[str]:
    """The newest revision of every migration branch."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def applied_revisions(engine: Engine) -> set[str]:
    """The revisions the database is at (empty before the first upgrade)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def upgrade_schema(engine: Engine) -> None:
    """Apply every pending migration on every branch ('heads', so parallel branches all land).

    All migrations run in one transaction holding the migration lock: on PostgreSQL a
    transaction-scoped advisory lock, on SQLite the write lock taken by BEGIN IMMEDIATE. A second
    caller blocks on that lock until the first commits, then sees the migrated schema.
    """
    from alembic import command

    dialect = engine.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise UnsupportedDialect(f"upgrade_schema: {engine.url!r} is neither PostgreSQL nor SQLite")
    with engine.connect() as connection:
        if dialect == "sqlite":
            require_hub_sqlite_engine(engine)
            connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        else:
            # Each statement must see what the lock holder committed; a snapshot taken before the
            # lock was granted would make the waiter migrate a second time.
            connection.execution_options(isolation_level="READ COMMITTED")
        with connection.begin():
            if dialect == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            command.upgrade(alembic_config(connection), "heads")
