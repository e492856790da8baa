"""The reservation as one PostgreSQL statement: lock, take stock, book the order, post, announce, record.

One round trip instead of ten. Its parts, as data-modifying CTEs of one statement, share one
snapshot and always all run to completion, so a duplicate idempotency key still fails the whole
statement with the unique violation, whatever else happened in it.

- `locked` takes the row locks of the order's products in product id order (ORDER BY is applied
  before FOR UPDATE locks), as the statement-by-statement path does: two orders never wait on each
  other in opposite orders. It is MATERIALIZED so the locks are taken once, before `taken` runs.
- `taken` decrements only lines whose locked row has the stock and the price the order was priced
  at; the statement returns how many it took and the locked rows, and the caller raises (rolling
  everything back) when that is fewer than the lines. The CHECK (stock >= 0) guards it again.
- the items are inserted only for products that exist, so an unknown product is reported by the
  caller's check, not by a foreign-key error.

Arrays (`unnest`) carry the lines and the ledger entries, so the text is the same for any number of
lines and psycopg prepares it once per connection.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

RESERVE_ORDER = sa.text(
    """
WITH lines AS (
    SELECT l.product_id, l.quantity, l.unit_price_minor, l.line_no
    FROM unnest(CAST(:product_ids AS text[]), CAST(:quantities AS integer[]), CAST(:prices AS bigint[]))
         WITH ORDINALITY AS l(product_id, quantity, unit_price_minor, line_no)
),
locked AS MATERIALIZED (
    SELECT product_id, name, stock, unit_price_minor
    FROM products
    WHERE product_id = ANY(CAST(:product_ids AS text[]))
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
        :order_id, :idempotency_key, :event_id, :customer_id, :email_ciphertext, :phone_ciphertext,
        :pii_key_id, :currency, :total_minor, :item_count, :payment_method, :status
    )
),
items AS (
    INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price_minor)
    SELECT :order_id, l.line_no, l.product_id, l.quantity, l.unit_price_minor
    FROM lines AS l JOIN locked AS k ON k.product_id = l.product_id
),
entries AS (
    INSERT INTO ledger_entries (posting_id, order_id, account, debit_minor, credit_minor, currency, memo)
    SELECT :posting_id, :order_id, e.account, e.debit_minor, e.credit_minor, :currency, :memo
    FROM unnest(CAST(:accounts AS text[]), CAST(:debits AS bigint[]), CAST(:credits AS bigint[]))
         AS e(account, debit_minor, credit_minor)
),
announced AS (
    INSERT INTO outbox (event_id, order_id, event_type, payload, traceparent)
    VALUES (:outbox_event_id, :order_id, :outbox_event_type, :outbox_payload, :traceparent)
),
booked AS (
    INSERT INTO order_intake (topic, "partition", "offset", event_id, outcome, idempotency_key, order_id)
    VALUES (:topic, :partition, :offset, :intake_event_id, :outcome, :idempotency_key, :order_id)
)
SELECT
    (SELECT count(*) FROM taken) AS taken,
    (SELECT json_agg(json_build_array(product_id, name, stock, unit_price_minor)) FROM locked) AS locked
"""
)

# The same statement with psycopg's %(name)s placeholders, for the reserve run on a held connection.
RESERVE_ORDER_PSYCOPG = str(RESERVE_ORDER.compile(dialect=psycopg_dialect()))

# Several orders' PAID in one statement: lock the still-open ones in id order, move them, and write
# each one's successful payment, its balanced "payment captured" posting (gateway clearing debited,
# receivable credited) and its `order.paid` outbox row. Returns the orders it moved.
RECORD_PAID = sa.text(
    """
WITH settled AS (
    SELECT *
    FROM unnest(
        CAST(:order_ids AS text[]), CAST(:references AS text[]), CAST(:amounts AS bigint[]),
        CAST(:currencies AS text[]), CAST(:posting_ids AS text[]), CAST(:event_ids AS text[]),
        CAST(:payloads AS bytea[]), CAST(:traceparents AS text[])
    ) AS s(order_id, reference, amount_minor, currency, posting_id, event_id, payload, traceparent)
),
locked AS MATERIALIZED (
    SELECT order_id
    FROM orders
    WHERE order_id = ANY(CAST(:order_ids AS text[])) AND status IN ('RESERVED', 'PAYMENT_UNKNOWN')
    ORDER BY order_id
    FOR UPDATE
),
paid AS (
    UPDATE orders AS o
    SET status = 'PAID', paid_at = now(), updated_at = now(), payment_reference = s.reference
    FROM settled AS s JOIN locked AS k ON k.order_id = s.order_id
    WHERE o.order_id = s.order_id AND o.status IN ('RESERVED', 'PAYMENT_UNKNOWN')
    RETURNING s.*
),
charges AS (
    INSERT INTO payments (order_id, gateway_reference, status, amount_minor, currency)
    SELECT order_id, coalesce(reference, 'unreferenced-' || order_id), 'succeeded', amount_minor, currency
    FROM paid
),
entries AS (
    INSERT INTO ledger_entries (posting_id, order_id, account, debit_minor, credit_minor, currency, memo)
    SELECT p.posting_id, p.order_id, e.account,
           CASE WHEN e.debit THEN p.amount_minor ELSE 0 END,
           CASE WHEN e.debit THEN 0 ELSE p.amount_minor END,
           p.currency, :memo
    FROM paid AS p CROSS JOIN (VALUES (:debit_account, true), (:credit_account, false)) AS e(account, debit)
),
announced AS (
    INSERT INTO outbox (event_id, order_id, event_type, payload, traceparent)
    SELECT event_id, order_id, 'order.paid', payload, traceparent FROM paid
)
SELECT order_id FROM paid
"""
)

RECORD_PAID_PSYCOPG = str(RECORD_PAID.compile(dialect=psycopg_dialect()))
