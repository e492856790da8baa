"""Why an upload ended where it did, beside its status.

Revision ID: 0009_media_upload_outcomes
Revises: 0008_media_active_content
Create Date: 2026-12-06

`media_uploads.status` is `landed` while the pipeline works on the upload, then `published`,
`quarantined` or `rejected`; `status_reason` says why for the last two ("infected: ...",
"not scannable: limit ...", "image over a limit: ...", an object key that breaks the key rule).
Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_media_upload_outcomes"
down_revision: str | Sequence[str] | None = "0008_media_active_content"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("media_uploads", sa.Column("status_reason", sa.Text))


def downgrade() -> None:
    # Batch mode: SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("media_uploads") as batch:
        batch.drop_column("status_reason")
