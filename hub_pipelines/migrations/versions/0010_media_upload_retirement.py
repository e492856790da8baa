"""When an upload settled, and when its Dagster partition was retired.

Revision ID: 0010_media_upload_retirement
Revises: 0009_media_upload_outcomes
Create Date: 2026-12-06

`media_uploads.settled_at` is when the upload's status last became `published`, `quarantined` or
`rejected` (NULL while it is `landed`); `retired_at` is when the housekeeping job removed its dynamic
partition from Dagster (NULL while Dagster holds it). The partial index serves the job's one query:
settled, not yet retired, oldest first. Rows settled before this revision take `last_seen_at`.
Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_media_upload_retirement"
down_revision: str | Sequence[str] | None = "0009_media_upload_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_RETIRED = "retired_at IS NULL"


def upgrade() -> None:
    op.add_column("media_uploads", sa.Column("settled_at", sa.DateTime(timezone=True)))
    op.add_column("media_uploads", sa.Column("retired_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE media_uploads SET settled_at = last_seen_at WHERE status <> 'landed'")
    op.create_index(
        "ix_media_uploads_settled_at",
        "media_uploads",
        ["settled_at"],
        postgresql_where=sa.text(NOT_RETIRED),
        sqlite_where=sa.text(NOT_RETIRED),
    )


def downgrade() -> None:
    op.drop_index("ix_media_uploads_settled_at", table_name="media_uploads")
    # Batch mode: SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("media_uploads") as batch:
        batch.drop_column("retired_at")
        batch.drop_column("settled_at")
