"""`reserve_orders`: a group of orders reserved in one transaction, each decided on its own, in order.

Revision ID: 0011_reserve_order_groups
Revises: 0010_media_upload_retirement
Create Date: 2026-12-06

The ledger reserves a group of orders (in inbox offset order) in one SERIALIZABLE transaction: one
round trip and one commit instead of one each. Each order is `reserve_order` (0006) inside its own
block, so an order that is short of stock, repriced, already booked (a unique key) or refused by the
database rolls back its own writes only, and its neighbours stand. The function answers one outcome
per order: `reserved`, or the SQLSTATE that refused it; the caller decides those orders again one by
one, as before, where the reason is named. Lost races (40001, 40P01) are not caught: they abort the
whole group, which runs again. Orders arrive as one JSON array (bytea as base64), since their lines
differ in number. PostgreSQL only: on SQLite the ledger reserves order by order.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011_reserve_order_groups"
down_revision: str | Sequence[str] | None = "0010_media_upload_retirement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESERVE_ORDERS = """
CREATE FUNCTION reserve_orders(p_orders jsonb) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    v_order jsonb;
    v_outcomes text[] := '{}';
BEGIN
    FOR v_order IN
        SELECT o.value FROM jsonb_array_elements(p_orders) WITH ORDINALITY AS o(value, n) ORDER BY o.n
    LOOP
        BEGIN
            PERFORM reserve_order(
                p_order_id => v_order->>'order_id',
                p_idempotency_key => v_order->>'idempotency_key',
                p_event_id => v_order->>'event_id',
                p_customer_id => v_order->>'customer_id',
                p_email_ciphertext => decode(v_order->>'email_ciphertext', 'base64'),
                p_phone_ciphertext => decode(v_order->>'phone_ciphertext', 'base64'),
                p_pii_key_id => v_order->>'pii_key_id',
                p_currency => v_order->>'currency',
                p_total_minor => (v_order->>'total_minor')::bigint,
                p_item_count => (v_order->>'item_count')::integer,
                p_payment_method => v_order->>'payment_method',
                p_status => v_order->>'status',
                p_request_sha256 => v_order->>'request_sha256',
                p_product_ids => ARRAY(
                    SELECT e.value FROM jsonb_array_elements_text(v_order->'product_ids')
                        WITH ORDINALITY AS e(value, n) ORDER BY e.n),
                p_quantities => ARRAY(
                    SELECT e.value::integer FROM jsonb_array_elements_text(v_order->'quantities')
                        WITH ORDINALITY AS e(value, n) ORDER BY e.n),
                p_prices => ARRAY(
                    SELECT e.value::bigint FROM jsonb_array_elements_text(v_order->'prices')
                        WITH ORDINALITY AS e(value, n) ORDER BY e.n),
                p_posting_id => v_order->>'posting_id',
                p_memo => v_order->>'memo',
                p_accounts => ARRAY(
                    SELECT e.value FROM jsonb_array_elements_text(v_order->'accounts')
                        WITH ORDINALITY AS e(value, n) ORDER BY e.n),
                p_debits => ARRAY(
                    SELECT e.value::bigint FROM jsonb_array_elements_text(v_order->'debits')
                        WITH ORDINALITY AS e(value, n) ORDER BY e.n),
                p_credits => ARRAY(
                    SELECT e.value::bigint FROM jsonb_array_elements_text(v_order->'credits')
                        WITH ORDINALITY AS e(value, n) ORDER BY e.n),
                p_outbox_event_id => v_order->>'outbox_event_id',
                p_outbox_event_type => v_order->>'outbox_event_type',
                p_outbox_payload => decode(v_order->>'outbox_payload', 'base64'),
                p_traceparent => v_order->>'traceparent',
                p_topic => v_order->>'topic',
                p_partition => (v_order->>'partition')::integer,
                p_offset => (v_order->>'offset')::bigint,
                p_intake_event_id => v_order->>'intake_event_id',
                p_outcome => v_order->>'outcome'
            );
            v_outcomes := v_outcomes || 'reserved'::text;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected THEN
                RAISE;
            WHEN OTHERS THEN
                v_outcomes := v_outcomes || SQLSTATE::text;
        END;
    END LOOP;
    RETURN v_outcomes;
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_RESERVE_ORDERS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION reserve_orders(jsonb)")
