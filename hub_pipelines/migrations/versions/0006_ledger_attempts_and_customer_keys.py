"""The ledger's durable attempt counts, so an order that keeps failing is parked instead of wedging.

Revision ID: 0006_ledger_attempts
Revises: 0004_reserve_order_function
Create Date: 2026-12-06

`ledger_attempts` counts, per subject (an inbox event by its position, or an order awaiting its
payment outcome), how often processing it raised an unexpected error, across batches and processes;
at the ledger's limit the subject is parked (`parked_at`) and an alert raised.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_ledger_attempts"
down_revision: str | Sequence[str] | None = "0004_reserve_order_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_attempts",
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("subject", name="pk_ledger_attempts"),
    )


def downgrade() -> None:
    op.drop_table("ledger_attempts")
