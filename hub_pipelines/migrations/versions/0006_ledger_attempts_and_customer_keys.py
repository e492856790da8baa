"""Durable attempt counts of the ledger; idempotency keys scoped per customer, with the request's fingerprint.

Revision ID: 0006_ledger_attempts
Revises: 0005_landed_ranges_gaps_and_loss
Create Date: 2026-12-06

`ledger_attempts` counts, per subject (an inbox event by its position, or an order awaiting its
payment outcome), how often processing it raised an unexpected error, across batches and processes;
at the ledger's limit the subject is parked (`parked_at`) and an alert raised.

An idempotency key is unique per customer, no longer globally (another customer's key is another
order), and each order keeps `request_sha256`, the fingerprint of what was asked (items with their
sent prices, currency, payment method), so a reused key with other contents is told apart from a
redelivery. `reserve_order` takes the fingerprint as one more argument: the function of 0004 is
replaced by one that writes it (the statement is otherwise the same).
"""

from __future__ import annotations

import runpy
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006_ledger_attempts"
down_revision: str | Sequence[str] | None = "0005_landed_ranges_gaps_and_loss"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_RESERVE_ORDER = """
CREATE FUNCTION reserve_order(
    p_order_id text, p_idempotency_key text, p_event_id text, p_customer_id text,
    p_email_ciphertext bytea, p_phone_ciphertext bytea, p_pii_key_id text, p_currency text,
    p_total_minor bigint, p_item_count integer, p_payment_method text, p_status text,
    p_request_sha256 text,
    p_product_ids text[], p_quantities integer[], p_prices bigint[],
    p_posting_id text, p_memo text, p_accounts text[], p_debits bigint[], p_credits bigint[],
    p_outbox_event_id text, p_outbox_event_type text, p_outbox_payload bytea, p_traceparent text,
    p_topic text, p_partition integer, p_offset bigint, p_intake_event_id text, p_outcome text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_taken integer;
    v_locked json;
BEGIN
    WITH lines AS (
        SELECT l.product_id, l.quantity, l.unit_price_minor, l.line_no
        FROM unnest(p_product_ids, p_quantities, p_prices)
             WITH ORDINALITY AS l(product_id, quantity, unit_price_minor, line_no)
    ),
    locked AS MATERIALIZED (
        SELECT product_id, name, stock, unit_price_minor
        FROM products
        WHERE product_id = ANY(p_product_ids)
        ORDER BY product_id
        FOR UPDATE
    ),
    taken AS (
        UPDATE products AS p
        SET stock = p.stock - l.quantity
        FROM lines AS l JOIN locked AS k ON k.product_id = l.product_id
        WHERE p.product_id = l.product_id
          AND k.stock >= l.quantity
          AND k.unit_price_minor = l.unit_price_minor
        RETURNING p.product_id
    ),
    placed AS (
        INSERT INTO orders (
            order_id, idempotency_key, event_id, customer_id, email_ciphertext, phone_ciphertext,
            pii_key_id, currency, total_minor, item_count, payment_method, status, request_sha256
        )
        VALUES (
            p_order_id, p_idempotency_key, p_event_id, p_customer_id, p_email_ciphertext,
            p_phone_ciphertext, p_pii_key_id, p_currency, p_total_minor, p_item_count,
            p_payment_method, p_status, p_request_sha256
        )
    ),
    items AS (
        INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price_minor)
        SELECT p_order_id, l.line_no, l.product_id, l.quantity, l.unit_price_minor
        FROM lines AS l JOIN locked AS k ON k.product_id = l.product_id
    ),
    entries AS (
        INSERT INTO ledger_entries (posting_id, order_id, account, debit_minor, credit_minor, currency, memo)
        SELECT p_posting_id, p_order_id, e.account, e.debit_minor, e.credit_minor, p_currency, p_memo
        FROM unnest(p_accounts, p_debits, p_credits) AS e(account, debit_minor, credit_minor)
    ),
    announced AS (
        INSERT INTO outbox (event_id, order_id, event_type, payload, traceparent)
        VALUES (p_outbox_event_id, p_order_id, p_outbox_event_type, p_outbox_payload, p_traceparent)
    ),
    booked AS (
        INSERT INTO order_intake (topic, "partition", "offset", event_id, outcome, idempotency_key, order_id)
        VALUES (p_topic, p_partition, p_offset, p_intake_event_id, p_outcome, p_idempotency_key, p_order_id)
    )
    SELECT
        (SELECT count(*) FROM taken),
        (SELECT json_agg(json_build_array(product_id, name, stock, unit_price_minor)) FROM locked)
    INTO v_taken, v_locked;
    IF v_taken <> cardinality(p_product_ids) THEN
        RAISE EXCEPTION 'order %: % of % lines reserved', p_order_id, v_taken, cardinality(p_product_ids)
            USING ERRCODE = 'HO001', DETAIL = coalesce(v_locked::text, '[]');
    END IF;
END;
$$;
"""
_OLD_SIGNATURE = (
    "text, text, text, text, bytea, bytea, text, text, bigint, integer, text, text, "
    "text[], integer[], bigint[], text, text, text[], bigint[], bigint[], text, text, bytea, text, "
    "text, integer, bigint, text, text"
)
_NEW_SIGNATURE = (
    "text, text, text, text, bytea, bytea, text, text, bigint, integer, text, text, text, "
    "text[], integer[], bigint[], text, text, text[], bigint[], bigint[], text, text, bytea, text, "
    "text, integer, bigint, text, text"
)


def upgrade() -> None:
    op.create_table(
        "ledger_attempts",
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("subject", name="pk_ledger_attempts"),
    )
    with op.batch_alter_table("orders") as orders:
        orders.add_column(sa.Column("request_sha256", sa.Text, nullable=True))
        orders.drop_constraint("uq_orders_idempotency_key", type_="unique")
        orders.create_unique_constraint(
            "uq_orders_customer_id_idempotency_key", ["customer_id", "idempotency_key"]
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION reserve_order({_OLD_SIGNATURE})")
        op.execute(_RESERVE_ORDER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION reserve_order({_NEW_SIGNATURE})")
        revision_0004 = runpy.run_path(str(Path(__file__).with_name("0004_reserve_order_function.py")))
        op.execute(revision_0004["_RESERVE_ORDER"])
    with op.batch_alter_table("orders") as orders:
        orders.drop_constraint("uq_orders_customer_id_idempotency_key", type_="unique")
        orders.create_unique_constraint("uq_orders_idempotency_key", ["idempotency_key"])
        orders.drop_column("request_sha256")
    op.drop_table("ledger_attempts")
