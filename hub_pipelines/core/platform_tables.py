"""SQLAlchemy Core descriptions of the platform tables the landing layer writes.

The tables themselves are created by the Alembic migrations in `hub_pipelines/migrations`
(`hub_pipelines.core.schema.upgrade_schema`); these objects only let code build statements against
them, portably between SQLite and PostgreSQL. A test keeps them equal to the migrated schema.

Timestamps are UTC: PostgreSQL stores them as timestamptz, SQLite as text without the offset.
`partition`, `offset` and `read` are SQL keywords: SQLAlchemy quotes them, hand-written SQL must too.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT on PostgreSQL; on SQLite only an INTEGER primary key is the auto-numbered rowid.
AutoIncrementId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _utc_timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


media_uploads = sa.Table(
    "media_uploads",
    metadata,
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("etag", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text),
    sa.Column("content_type_claimed", sa.Text),
    _utc_timestamp("first_seen_at"),
    _utc_timestamp("last_seen_at"),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_reason", sa.Text),
    sa.Column("settled_at", sa.DateTime(timezone=True)),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
    sa.Index(
        "ix_media_uploads_settled_at",
        "settled_at",
        postgresql_where=sa.text("retired_at IS NULL"),
        sqlite_where=sa.text("retired_at IS NULL"),
    ),
)

topic_inbox = sa.Table(
    "topic_inbox",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("key", sa.LargeBinary),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("payload_key_id", sa.Text),
    sa.Column("headers", Json, nullable=False, server_default=sa.text("'{}'")),
    _utc_timestamp("received_at"),
    sa.UniqueConstraint("topic", "event_id"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", AutoIncrementId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("topic", sa.Text),
    sa.Column("partition", sa.Integer),
    sa.Column("offset", sa.BigInteger),
    sa.Column("event_id", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_key_id", sa.Text),
    _utc_timestamp("created_at"),
    # A replayed message is dead-lettered once: by its topic position, or, for sources that are not
    # topics (topic NULL, where the constraint above never matches), by its event id.
    sa.UniqueConstraint("source", "topic", "partition", "offset"),
    sa.Index(
        "ix_dead_letters_source_event_id",
        "source",
        "event_id",
        unique=True,
        postgresql_where=sa.text("topic IS NULL"),
        sqlite_where=sa.text("topic IS NULL"),
    ),
)

landed_ranges = sa.Table(
    "landed_ranges",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("start_offset", sa.BigInteger, primary_key=True),
    sa.Column("end_offset", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("read", sa.Integer, nullable=False),
    sa.Column("landed", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("dead_lettered", sa.Integer, nullable=False),
    _utc_timestamp("landed_at"),
    # Offsets the broker held no message for (transaction markers, aborted or compacted records), and
    # offsets deleted upstream before they were read: read + gaps + lost = end_offset - start_offset.
    sa.Column("gaps", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("lost", sa.Integer, nullable=False, server_default=sa.text("0")),
)
