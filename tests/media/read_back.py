"""What the media tests read back from SQL to see what a step recorded."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.landing.upload_records import media_uploads


def dead_letters_from(database: SqlDatabase, source: str) -> list[dict[str, Any]]:
    query = sa.text("SELECT event_id, reason, payload FROM dead_letters WHERE source = :source")
    with database.transaction() as connection:
        return [dict(row) for row in connection.execute(query, {"source": source}).mappings()]


def upload_outcome(database: SqlDatabase, partition_key: str) -> tuple[str, str | None] | None:
    """(status, reason) of the upload's row, or None when it was never recorded."""
    query = sa.select(media_uploads.c.status, media_uploads.c.status_reason).where(
        media_uploads.c.partition_key == partition_key
    )
    with database.transaction() as connection:
        row = connection.execute(query).first()
    return (row.status, row.status_reason) if row else None
