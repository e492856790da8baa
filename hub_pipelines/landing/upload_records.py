"""The `media_uploads` table: one row per upload partition, first-seen time kept across re-runs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite

from hub_pipelines.core.platform_tables import media_uploads
from hub_pipelines.core.ports import SqlDatabase


@dataclass(frozen=True)
class UploadRecord:
    partition_key: str
    object_key: str
    size: int
    etag: str
    sha256: str
    content_type_claimed: str | None
    seen_at: datetime


def record_upload(database: SqlDatabase, upload: UploadRecord) -> UploadRecord:
    """Insert or refresh the upload's row; returns it with the first time it was ever seen."""
    insert = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
    statement = insert(media_uploads).values(
        partition_key=upload.partition_key,
        object_key=upload.object_key,
        size=upload.size,
        etag=upload.etag,
        sha256=upload.sha256,
        content_type_claimed=upload.content_type_claimed,
        first_seen_at=upload.seen_at,
        last_seen_at=upload.seen_at,
        status="landed",
    )
    upsert = statement.on_conflict_do_update(
        index_elements=["partition_key"],
        set_={
            "object_key": statement.excluded.object_key,
            "size": statement.excluded.size,
            "etag": statement.excluded.etag,
            "sha256": statement.excluded.sha256,
            "content_type_claimed": statement.excluded.content_type_claimed,
            "last_seen_at": statement.excluded.last_seen_at,
        },
    ).returning(media_uploads.c.first_seen_at)
    with database.transaction() as connection:
        first_seen = connection.execute(upsert).scalar_one()
    return replace(upload, seen_at=first_seen)
