"""The order reservation as a PostgreSQL function, so its transaction is one round trip.

Revision ID: 0004_reserve_order_function
Revises: 0003_media_publishing
Create Date: 2026-11-25

`reserve_order(...)` runs the reservation's one statement (lock the products in id order, take the
stock, book the order, its items, its posting, its `order.created` outbox row and its intake record;
see `hub_pipelines.orders.reservation_sql`) in the caller's transaction, and raises SQLSTATE HO001
with the locked rows as JSON in DETAIL when a line was not taken (short stock, changed price,
unknown product), which rolls all of it back. Because failing is the function's own doing, the
client sends BEGIN, the call and COMMIT together (pipeline mode) without first reading whether every
line was taken. It runs inside the caller's SERIALIZABLE transaction: isolation, row locks and
unique keys behave as for the statement sent from the client. PostgreSQL only; SQLite keeps the
statement-by-statement path.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_reserve_order_function"
down_revision: str | Sequence[str] | None = "0003_media_publishing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESERVE_ORDER = """
CREATE FUNCTION reserve_order(
    p_order_id text, p_idempotency_key text, p_event_id text, p_customer_id text,
    p_email_ciphertext bytea, p_phone_ciphertext bytea, p_pii_key_id text, p_currency text,
    p_total_minor bigint, p_item_count integer, p_payment_method text, p_status text,
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
            pii_key_id, currency, total_minor, item_count, payment_method, status
        )
        VALUES (
            p_order_id, p_idempotency_key, p_event_id, p_customer_id, p_email_ciphertext,
            p_phone_ciphertext, p_pii_key_id, p_currency, p_total_minor, p_item_count,
            p_payment_method, p_status
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_RESERVE_ORDER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION reserve_order(text, text, text, text, bytea, bytea, text, text, bigint, integer, "
            "text, text, text[], integer[], bigint[], text, text, text[], bigint[], bigint[], text, text, "
            "bytea, text, text, integer, bigint, text, text)"
        )
