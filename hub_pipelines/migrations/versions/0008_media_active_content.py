"""What was stripped from a published PDF to make it inert, on its variant row.

Revision ID: 0008_media_active_content
Revises: 0007_sealed_payloads
Create Date: 2026-12-06

`media_variants.active_content_removed` holds, per category (javascript, launch, embedded_files, ...),
how many active elements were removed from the PDF rendition; `{}` for a PDF that had none, NULL for
images and videos. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_media_active_content"
down_revision: str | Sequence[str] | None = "0007_sealed_payloads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("media_variants", sa.Column("active_content_removed", JSON))


def downgrade() -> None:
    # Batch mode: SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("media_variants") as batch:
        batch.drop_column("active_content_removed")
