"""Landed ranges count broker gaps and upstream loss apart from the messages read.

Revision ID: 0005_landed_ranges_gaps_and_loss
Revises: 0004_reserve_order_function
Create Date: 2026-12-06

`gaps`: offsets of a range the broker held no message for (transaction commit/abort markers, aborted
transactions' records under read_committed, records compacted away). `lost`: offsets deleted upstream
(retention, a manual delete) before the landing read them. A range reconciles when
read + gaps + lost = end_offset - start_offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_landed_ranges_gaps_and_loss"
down_revision: str | Sequence[str] | None = "0004_reserve_order_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("landed_ranges") as table:
        table.add_column(sa.Column("gaps", sa.Integer, nullable=False, server_default=sa.text("0")))
        table.add_column(sa.Column("lost", sa.Integer, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("landed_ranges") as table:
        table.drop_column("lost")
        table.drop_column("gaps")
