"""Unexpected failures of the ledger, counted durably per subject, so a poison order is parked.

A subject is an inbox event (by its position) that raised before it was booked, or an order whose
payment outcome could not be recorded. Each failure adds one attempt in its own transaction, so the
count survives crashes and is shared by every ledger process; once a subject has failed
`max_attempts` times the caller parks it and raises an alert, and the batch goes on.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.tables import ledger_attempts

MAX_REASON_CHARS = 1000

logger = logging.getLogger(__name__)


def event_subject(topic: str, partition: int, offset: int) -> str:
    return f"event {topic} partition {partition} offset {offset}"


def order_subject(order_id: str) -> str:
    return f"order {order_id}"


def order_subject_sql(order_id: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """`order_subject` in SQL, to find an order's attempts row from the order."""
    return sa.literal("order ") + order_id


def order_parked(order_id: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """Whether the order was parked after repeated internal errors (kept out of reconciliation)."""
    return sa.exists().where(
        ledger_attempts.c.subject == order_subject_sql(order_id), ledger_attempts.c.parked_at.is_not(None)
    )


def storable_text(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` as PostgreSQL text can hold it: NUL and unpaired surrogates escaped, at most `limit` chars."""
    escaped = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def internal_reason(error: BaseException, attempts: int) -> str:
    """`internal: <ExceptionType>` with the first line of its message and the attempts made."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
    return storable_text(f"internal: {type(error).__name__} after {attempts} attempts: {message}")


def count_failure(database: SqlDatabase, subject: str, error: BaseException) -> int:
    """Add one failed attempt to `subject` and return how many it has had, this one included."""
    insert = (postgresql.insert if database.dialect == "postgresql" else sqlite.insert)(ledger_attempts)
    last_error = storable_text(f"{type(error).__name__}: {error}")
    statement = (
        insert.values(subject=subject, attempts=1, last_error=last_error)
        .on_conflict_do_update(
            index_elements=[ledger_attempts.c.subject],
            set_={
                "attempts": ledger_attempts.c.attempts + 1,
                "last_error": last_error,
                "updated_at": sa.func.now(),
            },
        )
        .returning(ledger_attempts.c.attempts)
    )
    with database.transaction() as connection:
        return int(connection.execute(statement).scalar_one())


def park(database: SqlDatabase, subject: str) -> None:
    """Take `subject` out of the ledger's work until an operator clears its row (see docs/operations.md)."""
    with database.transaction() as connection:
        connection.execute(
            sa.update(ledger_attempts)
            .where(ledger_attempts.c.subject == subject)
            .values(parked_at=sa.func.now(), updated_at=sa.func.now())
        )


def unpark(database: SqlDatabase, subject: str) -> None:
    """Give `subject` back to the ledger's work, its attempts kept: its next failure parks it again."""
    with database.transaction() as connection:
        connection.execute(
            sa.update(ledger_attempts)
            .where(ledger_attempts.c.subject == subject)
            .values(parked_at=None, updated_at=sa.func.now())
        )


def record_failure(database: SqlDatabase, subject: str, error: Exception, max_attempts: int) -> str | None:
    """Count one more failure of `subject`; at `max_attempts` park it and return the reason to
    dead-letter and alert with (`internal: <ExceptionType> ...`), else None: try again next batch."""
    attempts = count_failure(database, subject, error)
    logger.warning("%s: attempt %d of %d failed", subject, attempts, max_attempts, exc_info=error)
    if attempts < max_attempts:
        return None
    park(database, subject)
    return internal_reason(error, attempts)
