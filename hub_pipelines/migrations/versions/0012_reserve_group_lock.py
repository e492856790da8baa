"""`reserve_group_lock`: the table every lane's group reservation locks before its snapshot.

Revision ID: 0012_reserve_group_lock
Revises: 0011_reserve_order_groups
Create Date: 2026-12-06

Groups of every lane reserve the best-selling products, so two groups in flight at once mostly abort
one of them (a serialization failure). A group's transaction first takes `LOCK TABLE
reserve_group_lock IN EXCLUSIVE MODE`, which takes no snapshot: a group that waits there starts after
the one before it committed, and loses no race to it. The table holds no rows and is never written,
so (auto)vacuum never takes it; a self-conflicting lock on `products` itself would either block every
writer of that hot table or (SHARE UPDATE EXCLUSIVE) conflict with its autovacuum, which a waiting
group would sit behind until the deadlock timeout cancels it. PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_reserve_group_lock"
down_revision: str | Sequence[str] | None = "0011_reserve_order_groups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TABLE reserve_group_lock ()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE reserve_group_lock")
