"""The `media_uploads` table: one row per upload, first-seen time kept across re-runs, and where it ended.

`status` is `landed` while the pipeline works on the upload (each run of `media/uploads` sets it
again), then one terminal state with `status_reason` saying why: `published`, `quarantined`
("infected: ..." or "not scannable: ..."), or `rejected` (a breached limit, bytes no renderer
accepts, or an object key that breaks the key rule, recorded by the uploads sensor without a run).
`settled_at` is when it reached that state; `retired_at` when its Dagster partition was retired
(`hub_pipelines/landing/upload_retention.py`). A new run (landed again) clears both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hub_pipelines.core.platform_tables import media_uploads
from hub_pipelines.core.ports import SqlDatabase

LANDED = "landed"
PUBLISHED = "published"
QUARANTINED = "quarantined"
REJECTED = "rejected"
SETTLED = (PUBLISHED, QUARANTINED, REJECTED)


@dataclass(frozen=True)
class UploadRecord:
    partition_key: str
    object_key: str
    size: int
    etag: str
    sha256: str | None
    content_type_claimed: str | None
    seen_at: datetime


def _upsert_upload(database: SqlDatabase, upload: UploadRecord, status: str, reason: str | None) -> datetime:
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
        status=status,
        status_reason=reason,
        settled_at=None if status == LANDED else upload.seen_at,
        retired_at=None,
    )
    refreshed = (
        "object_key",
        "size",
        "etag",
        "sha256",
        "content_type_claimed",
        "last_seen_at",
        "status",
        "status_reason",
        "settled_at",
        "retired_at",
    )
    upsert = statement.on_conflict_do_update(
        index_elements=["partition_key"],
        set_={name: statement.excluded[name] for name in refreshed},
    ).returning(media_uploads.c.first_seen_at)
    with database.transaction() as connection:
        first_seen: datetime = connection.execute(upsert).scalar_one()
    return first_seen


def record_upload(database: SqlDatabase, upload: UploadRecord) -> UploadRecord:
    """Insert or refresh the upload's row as landed; returns it with the first time it was ever seen."""
    return replace(upload, seen_at=_upsert_upload(database, upload, LANDED, None))


def record_rejected_object(database: SqlDatabase, upload: UploadRecord, reason: str) -> None:
    """An object the pipeline will not run for (its key breaks the key rule), recorded as rejected.

    `upload.object_key` must already be shown safely (PostgreSQL text refuses NUL).
    """
    _upsert_upload(database, upload, REJECTED, reason)


def record_upload_outcome(database: SqlDatabase, partition_key: str, status: str, reason: str | None) -> None:
    """Where the upload's latest run left it: published, quarantined or rejected, and why."""
    statement = (
        sa.update(media_uploads)
        .where(media_uploads.c.partition_key == partition_key)
        .values(
            status=status, status_reason=reason, settled_at=datetime.now(UTC) if status in SETTLED else None
        )
    )
    with database.transaction() as connection:
        connection.execute(statement)


def rejected_upload(database: SqlDatabase, partition_key: str) -> bool:
    query = sa.select(media_uploads.c.status).where(media_uploads.c.partition_key == partition_key)
    with database.transaction() as connection:
        return connection.execute(query).scalar_one_or_none() == REJECTED


@dataclass(frozen=True)
class SettledUpload:
    partition_key: str
    object_key: str
    etag: str
    settled_at: datetime | None


def settled_uploads_to_retire(
    database: SqlDatabase,
    settled_before: datetime,
    limit: int,
    after: tuple[datetime | None, str] | None = None,
) -> list[SettledUpload]:
    """Up to `limit` uploads settled before `settled_before` and not retired, oldest first, after `after`.

    `after` is the (settled_at, partition_key) of the last one of the previous page.
    """
    columns = media_uploads.c
    query = (
        sa.select(columns.partition_key, columns.object_key, columns.etag, columns.settled_at)
        .where(columns.retired_at.is_(None), columns.settled_at < settled_before, columns.status.in_(SETTLED))
        .order_by(columns.settled_at, columns.partition_key)
        .limit(limit)
    )
    if after is not None:
        query = query.where(sa.tuple_(columns.settled_at, columns.partition_key) > sa.tuple_(*after))
    with database.transaction() as connection:
        return [SettledUpload(*row) for row in connection.execute(query)]


def mark_retired(
    database: SqlDatabase, partition_keys: Sequence[str], settled_before: datetime, now: datetime
) -> list[str]:
    """Marks the uploads retired that are still settled before `settled_before`; returns those marked.

    A run that landed one again meanwhile cleared its `settled_at`, so it is left as it is.
    """
    statement = (
        sa.update(media_uploads)
        .where(
            media_uploads.c.partition_key.in_(partition_keys),
            media_uploads.c.retired_at.is_(None),
            media_uploads.c.settled_at < settled_before,
            media_uploads.c.status.in_(SETTLED),
        )
        .values(retired_at=now)
        .returning(media_uploads.c.partition_key)
    )
    with database.transaction() as connection:
        return list(connection.execute(statement).scalars())


def mark_restored(database: SqlDatabase, partition_key: str, now: datetime) -> SettledUpload | None:
    """Clears the upload's retirement; it counts as settled `now`, so the retention leaves it for its days.

    None when no row has this partition key.
    """
    statement = (
        sa.update(media_uploads)
        .where(media_uploads.c.partition_key == partition_key)
        .values(
            retired_at=None,
            settled_at=sa.case((media_uploads.c.status.in_(SETTLED), now), else_=None),
        )
        .returning(
            media_uploads.c.partition_key,
            media_uploads.c.object_key,
            media_uploads.c.etag,
            media_uploads.c.settled_at,
        )
    )
    with database.transaction() as connection:
        row = connection.execute(statement).first()
    return SettledUpload(*row) if row else None


def upload_etag(database: SqlDatabase, partition_key: str) -> str | None:
    """The ETag of the bytes the upload's latest run recorded, or None when it was never recorded."""
    query = sa.select(media_uploads.c.etag).where(media_uploads.c.partition_key == partition_key)
    with database.transaction() as connection:
        etag: str | None = connection.execute(query).scalar_one_or_none()
    return etag
