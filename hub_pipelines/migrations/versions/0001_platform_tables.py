"""Platform tables for the landing layer: media uploads, topic inbox, dead letters, landed ranges.

Revision ID: 0001_platform_tables
Revises:
Create Date: 2026-11-25

Every table works on SQLite and PostgreSQL. Later migrations descend from this one; each
workflow may keep its own branch (`upgrade_schema` upgrades every head).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_platform_tables"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
AUTO_INCREMENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc_timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "media_uploads",
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text),
        sa.Column("content_type_claimed", sa.Text),
        _utc_timestamp("first_seen_at"),
        _utc_timestamp("last_seen_at"),
        sa.Column("status", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("partition_key", name="pk_media_uploads"),
    )
    op.create_table(
        "topic_inbox",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("key", sa.LargeBinary),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSON, nullable=False, server_default=sa.text("'{}'")),
        _utc_timestamp("received_at"),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name="pk_topic_inbox"),
        sa.UniqueConstraint("topic", "event_id", name="uq_topic_inbox_topic_event_id"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", AUTO_INCREMENT_ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("topic", sa.Text),
        sa.Column("partition", sa.Integer),
        sa.Column("offset", sa.BigInteger),
        sa.Column("event_id", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary),
        _utc_timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint(
            "source", "topic", "partition", "offset", name="uq_dead_letters_source_topic_partition_offset"
        ),
    )
    op.create_index(
        "ix_dead_letters_source_event_id",
        "dead_letters",
        ["source", "event_id"],
        unique=True,
        postgresql_where=sa.text("topic IS NULL"),
        sqlite_where=sa.text("topic IS NULL"),
    )
    op.create_table(
        "landed_ranges",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("start_offset", sa.BigInteger, nullable=False),
        sa.Column("end_offset", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("read", sa.Integer, nullable=False),
        sa.Column("landed", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("dead_lettered", sa.Integer, nullable=False),
        _utc_timestamp("landed_at"),
        sa.PrimaryKeyConstraint("topic", "partition", "start_offset", name="pk_landed_ranges"),
    )


def downgrade() -> None:
    op.drop_table("landed_ranges")
    op.drop_index("ix_dead_letters_source_event_id", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("topic_inbox")
    op.drop_table("media_uploads")
