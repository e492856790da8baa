"""The key id of sealed payloads: inbox and dead-letter payloads are encrypted at rest.

Revision ID: 0007_sealed_payloads
Revises: 0006_ledger_attempts
Create Date: 2026-12-06

`payload_key_id` names the PII key a row's payload is sealed with (see
`hub_pipelines.orders.sealed_payloads`); NULL is plaintext. Rows landed before this revision stay
plaintext until `hub-pipelines rotate-keys` seals them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_sealed_payloads"
down_revision: str | Sequence[str] | None = "0006_ledger_attempts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("topic_inbox", sa.Column("payload_key_id", sa.Text))
    op.add_column("dead_letters", sa.Column("payload_key_id", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("payload_key_id")
    with op.batch_alter_table("topic_inbox") as batch:
        batch.drop_column("payload_key_id")
