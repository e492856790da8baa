"""Media workflow tables: scan verdicts, detected content types, publications and their variants.

Revision ID: 0003_media_publishing
Revises: 0002_orders_ledger
Create Date: 2026-11-25

Works on SQLite and PostgreSQL. Statements are built from `hub_pipelines.media.records`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_media_publishing"
down_revision: str | Sequence[str] | None = "0002_orders_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "media_scan_verdicts",
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("clean", sa.Boolean, nullable=False),
        sa.Column("signature", sa.Text),
        sa.Column("scanner", sa.Text, nullable=False),
        sa.Column("scanned_bytes", sa.BigInteger, nullable=False),
        sa.Column("quarantine_key", sa.Text),
        _timestamp("scanned_at"),
        sa.PrimaryKeyConstraint("partition_key", "sha256", name="pk_media_scan_verdicts"),
    )
    op.create_table(
        "media_content_types",
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("mime", sa.Text, nullable=False),
        sa.Column("claimed_mime", sa.Text),
        sa.Column("mismatch", sa.Boolean, nullable=False),
        _timestamp("detected_at"),
        sa.PrimaryKeyConstraint("partition_key", "sha256", name="pk_media_content_types"),
    )
    op.create_table(
        "media_publications",
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("mime", sa.Text, nullable=False),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
        sa.Column("variant_count", sa.Integer, nullable=False),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("regions", JSON, nullable=False),
        _timestamp("published_at"),
        sa.PrimaryKeyConstraint("partition_key", name="pk_media_publications"),
    )
    op.create_table(
        "media_variants",
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("source_sha256", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("mime", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.Text, nullable=False),
        sa.Column("urls", JSON, nullable=False),
        sa.Column("encode_seconds", sa.Float, nullable=False),
        sa.Column("duration_seconds", sa.Float),
        sa.PrimaryKeyConstraint("partition_key", "label", "format", name="pk_media_variants"),
    )
    op.create_index("ix_media_variants_key", "media_variants", ["key"])


def downgrade() -> None:
    op.drop_index("ix_media_variants_key", table_name="media_variants")
    op.drop_table("media_variants")
    op.drop_table("media_publications")
    op.drop_table("media_content_types")
    op.drop_table("media_scan_verdicts")
