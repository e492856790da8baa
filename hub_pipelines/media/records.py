"""The media workflow's SQL records: scan verdicts, detected types, publications and their variants.

The tables are created by the Alembic migration `0003_media_publishing`; these SQLAlchemy Core
objects only build statements against them, portably between SQLite and PostgreSQL. Every write is
an upsert keyed by the upload's partition (and the bytes' sha256 where a re-upload must not
overwrite the verdict on the earlier bytes), so re-materializing a partition leaves no duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hub_pipelines.core.ports import NOT_SCANNABLE, SqlDatabase

metadata = sa.MetaData()
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIMESTAMP = sa.DateTime(timezone=True)

media_scan_verdicts = sa.Table(
    "media_scan_verdicts",
    metadata,
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("clean", sa.Boolean, nullable=False),
    sa.Column("signature", sa.Text),
    sa.Column("scanner", sa.Text, nullable=False),
    sa.Column("scanned_bytes", sa.BigInteger, nullable=False),
    sa.Column("quarantine_key", sa.Text),
    sa.Column("scanned_at", _TIMESTAMP, nullable=False),
)

media_content_types = sa.Table(
    "media_content_types",
    metadata,
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("mime", sa.Text, nullable=False),
    sa.Column("claimed_mime", sa.Text),
    sa.Column("mismatch", sa.Boolean, nullable=False),
    sa.Column("detected_at", _TIMESTAMP, nullable=False),
)

media_publications = sa.Table(
    "media_publications",
    metadata,
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("mime", sa.Text, nullable=False),
    sa.Column("bytes_in", sa.BigInteger, nullable=False),
    sa.Column("bytes_out", sa.BigInteger, nullable=False),
    sa.Column("variant_count", sa.Integer, nullable=False),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("regions", Json, nullable=False),
    sa.Column("published_at", _TIMESTAMP, nullable=False),
)

media_variants = sa.Table(
    "media_variants",
    metadata,
    sa.Column("partition_key", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, primary_key=True),
    sa.Column("format", sa.Text, primary_key=True),
    sa.Column("source_sha256", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("mime", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.Text, nullable=False),
    sa.Column("urls", Json, nullable=False),
    sa.Column("encode_seconds", sa.Float, nullable=False),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("active_content_removed", Json),
    sa.Index("ix_media_variants_key", "key"),
)

_dead_letters = sa.table(
    "dead_letters",
    sa.column("source"),
    sa.column("event_id"),
    sa.column("reason"),
    sa.column("payload"),
)


@dataclass(frozen=True)
class ScanRecord:
    partition_key: str
    sha256: str
    object_key: str
    clean: bool
    signature: str | None
    scanner: str
    scanned_bytes: int
    quarantine_key: str | None = None


@dataclass(frozen=True)
class ContentTypeRecord:
    partition_key: str
    sha256: str
    kind: str
    mime: str
    claimed_mime: str | None
    mismatch: bool


@dataclass(frozen=True)
class PublicationRecord:
    partition_key: str
    object_key: str
    sha256: str
    kind: str
    mime: str
    bytes_in: int
    bytes_out: int
    duration_seconds: float | None
    regions: Sequence[str]


@dataclass(frozen=True)
class VariantRecord:
    label: str
    format: str
    kind: str
    mime: str
    key: str
    width: int
    height: int
    bytes: int
    checksum: str
    urls: Mapping[str, str]
    encode_seconds: float
    duration_seconds: float | None
    active_content_removed: Mapping[str, int] | None = None


def _upsert(database: SqlDatabase, table: sa.Table, values: Mapping[str, Any]) -> None:
    insert = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**values)
    keys = [column.name for column in table.primary_key.columns]
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={name: statement.excluded[name] for name in values if name not in keys},
    )
    with database.transaction() as connection:
        connection.execute(statement)


def record_scan(database: SqlDatabase, scan: ScanRecord) -> None:
    """Store the verdict for these bytes of the upload, replacing an earlier verdict on the same bytes."""
    _upsert(database, media_scan_verdicts, {**scan.__dict__, "scanned_at": datetime.now(UTC)})


def _first_record(database: SqlDatabase, table: sa.Table, record_type: Any, query: sa.Select) -> Any:
    """The first row of `query` (selecting `record_type`'s fields from `table`) as a record, or None."""
    with database.transaction() as connection:
        row = connection.execute(query).mappings().first()
    return record_type(**row) if row else None


def _select_record(table: sa.Table, record_type: Any) -> sa.Select:
    return sa.select(*(table.c[name] for name in record_type.__dataclass_fields__))


def scan_verdict_for(database: SqlDatabase, partition_key: str, sha256: str) -> ScanRecord | None:
    """The recorded verdict on exactly these bytes of the upload, if they were scanned."""
    table = media_scan_verdicts
    query = _select_record(table, ScanRecord).where(
        table.c.partition_key == partition_key, table.c.sha256 == sha256
    )
    return _first_record(database, table, ScanRecord, query)


def infected_verdict_for(database: SqlDatabase, partition_key: str) -> ScanRecord | None:
    """The latest infected verdict of the upload: its original has been moved to quarantine."""
    table = media_scan_verdicts
    query = (
        _select_record(table, ScanRecord)
        .where(table.c.partition_key == partition_key, sa.not_(table.c.clean))
        .order_by(table.c.scanned_at.desc())
        .limit(1)
    )
    return _first_record(database, table, ScanRecord, query)


def quarantined_uploads(database: SqlDatabase) -> dict[str, int]:
    """Uploads whose original was moved to quarantine, by reason: `infected` or `not_scannable`."""
    table = media_scan_verdicts
    reason = sa.case((table.c.signature.startswith(NOT_SCANNABLE), "not_scannable"), else_="infected")
    query = (
        sa.select(reason, sa.func.count(sa.distinct(table.c.partition_key)))
        .where(table.c.quarantine_key.is_not(None))
        .group_by(reason)
    )
    with database.transaction() as connection:
        counted = {str(name): int(count) for name, count in connection.execute(query)}
    return {"infected": 0, "not_scannable": 0, **counted}


def record_content_type(database: SqlDatabase, detected: ContentTypeRecord) -> None:
    _upsert(database, media_content_types, {**detected.__dict__, "detected_at": datetime.now(UTC)})


def record_publication(
    database: SqlDatabase, publication: PublicationRecord, variants: Sequence[VariantRecord]
) -> None:
    """The upload's publication and exactly these variants, in one transaction.

    Variants of an earlier publication of the partition (before a re-upload) are replaced, not kept
    beside the new ones: the row set always describes what the upload's record points at now.
    """
    insert = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
    values = {
        **publication.__dict__,
        "regions": list(publication.regions),
        "variant_count": len(variants),
        "published_at": datetime.now(UTC),
    }
    statement = insert(media_publications).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["partition_key"],
        set_={name: statement.excluded[name] for name in values if name != "partition_key"},
    )
    rows = [
        {
            **variant.__dict__,
            "urls": dict(variant.urls),
            "active_content_removed": (
                dict(variant.active_content_removed) if variant.active_content_removed is not None else None
            ),
            "partition_key": publication.partition_key,
            "source_sha256": publication.sha256,
        }
        for variant in variants
    ]
    with database.transaction() as connection:
        connection.execute(statement)
        connection.execute(
            sa.delete(media_variants).where(media_variants.c.partition_key == publication.partition_key)
        )
        if rows:
            connection.execute(sa.insert(media_variants), rows)


def published_variants(database: SqlDatabase, partition_key: str) -> list[dict[str, Any]]:
    """The variant rows the upload's current record points at (empty before its first publication)."""
    query = (
        sa.select(media_variants)
        .where(media_variants.c.partition_key == partition_key)
        .order_by(media_variants.c.label, media_variants.c.format)
    )
    with database.transaction() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def keys_referenced_elsewhere(database: SqlDatabase, partition_key: str, keys: Sequence[str]) -> set[str]:
    """Which of `keys` another upload's record also points at (identical bytes share one key)."""
    if not keys:
        return set()
    query = sa.select(media_variants.c.key).where(
        media_variants.c.key.in_(list(keys)), media_variants.c.partition_key != partition_key
    )
    with database.transaction() as connection:
        return set(connection.execute(query).scalars())


def publications_without_clean_scan(database: SqlDatabase) -> list[tuple[str, str]]:
    """(partition key, sha256) of every published upload whose published bytes have no clean verdict."""
    verdicts = media_scan_verdicts
    clean = (
        sa.select(sa.literal(1))
        .where(
            verdicts.c.partition_key == media_publications.c.partition_key,
            verdicts.c.sha256 == media_publications.c.sha256,
            verdicts.c.clean,
        )
        .exists()
    )
    query = sa.select(media_publications.c.partition_key, media_publications.c.sha256).where(~clean)
    with database.transaction() as connection:
        return [(row.partition_key, row.sha256) for row in connection.execute(query)]


def dead_letter(database: SqlDatabase, source: str, event_id: str, reason: str, payload: bytes) -> None:
    """Keep an undeliverable message in the shared `dead_letters` table, once per event id."""
    insert = postgresql.insert if database.dialect == "postgresql" else sqlite.insert
    statement = insert(_dead_letters).values(source=source, event_id=event_id, reason=reason, payload=payload)
    statement = statement.on_conflict_do_update(
        index_elements=["source", "event_id"],
        index_where=sa.text("topic IS NULL"),
        set_={"reason": statement.excluded.reason, "payload": statement.excluded.payload},
    )
    with database.transaction() as connection:
        connection.execute(statement)
