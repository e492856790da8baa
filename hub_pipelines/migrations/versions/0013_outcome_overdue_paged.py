"""`orders.outcome_overdue_paged_at`: when an order that waited too long for its payment outcome was paged.

Revision ID: 0013_outcome_overdue_paged
Revises: 0012_reserve_group_lock
Create Date: 2026-12-06

An order can stay RESERVED or PAYMENT_UNKNOWN for good (Stripe answers its key with 400
idempotency_error each time, every attempt times out), holding its stock while the customer may have
been charged. Past `payment_outcome_bound_s` it is paged once (`hub_pipelines/orders/overdue_payments.py`):
the ledger batch that sets this column, only while it is empty and the order still open, sends the
page, so every other batch and lane leaves it alone. Nullable without a default: adding it rewrites
no row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_outcome_overdue_paged"
down_revision: str | Sequence[str] | None = "0012_reserve_group_lock"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("outcome_overdue_paged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "outcome_overdue_paged_at")
