"""Order ledger tables: catalog, orders, intake book, payments, ledger, outbox, notifications, reports.

Revision ID: 0002_orders_ledger
Revises: 0001_platform_tables
Create Date: 2026-11-25

The ledger is append-only: triggers refuse UPDATE and DELETE on `ledger_entries` on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_orders_ledger"
down_revision: str | Sequence[str] | None = "0001_platform_tables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUTO_INCREMENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_APPEND_ONLY = """
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
"""


def _utc_timestamp(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        _utc_timestamp("updated_at"),
        sa.PrimaryKeyConstraint("product_id", name="pk_products"),
        sa.CheckConstraint("stock >= 0", name="ck_products_stock_not_negative"),
        sa.CheckConstraint("unit_price_minor >= 0", name="ck_products_price_not_negative"),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("email_ciphertext", sa.LargeBinary),
        sa.Column("phone_ciphertext", sa.LargeBinary),
        sa.Column("pii_key_id", sa.Text),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("payment_method", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("payment_reference", sa.Text),
        _utc_timestamp("created_at"),
        _utc_timestamp("updated_at"),
        _utc_timestamp("paid_at", nullable=True),
        sa.PrimaryKeyConstraint("order_id", name="pk_orders"),
        sa.UniqueConstraint("idempotency_key", name="uq_orders_idempotency_key"),
    )
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_no", name="pk_order_items"),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.product_id"], name="fk_order_items_product_id_products"
        ),
    )
    op.create_table(
        "order_intake",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("order_id", sa.Text),
        sa.Column("reason", sa.Text),
        _utc_timestamp("processed_at"),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name="pk_order_intake"),
    )
    op.create_table(
        "payments",
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("gateway_reference", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("detail", sa.Text),
        _utc_timestamp("recorded_at"),
        sa.PrimaryKeyConstraint("order_id", "gateway_reference", name="pk_payments"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.order_id"], name="fk_payments_order_id_orders"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", AUTO_INCREMENT_ID, autoincrement=True, nullable=False),
        sa.Column("posting_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("debit_minor", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("credit_minor", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("memo", sa.Text, nullable=False),
        _utc_timestamp("created_at"),
        sa.PrimaryKeyConstraint("entry_id", name="pk_ledger_entries"),
        sa.CheckConstraint(
            "(debit_minor > 0 AND credit_minor = 0) OR (credit_minor > 0 AND debit_minor = 0)",
            name="ck_ledger_entries_one_sided",
        ),
    )
    op.create_index("ix_ledger_entries_order_id", "ledger_entries", ["order_id"])
    op.create_table(
        "outbox",
        sa.Column("id", AUTO_INCREMENT_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("traceparent", sa.Text, nullable=False),
        _utc_timestamp("created_at"),
        _utc_timestamp("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "notification_log",
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        _utc_timestamp("created_at"),
        _utc_timestamp("updated_at"),
        sa.PrimaryKeyConstraint("order_id", "channel", name="pk_notification_log"),
    )
    op.create_table(
        "daily_revenue",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("revenue_minor", sa.BigInteger, nullable=False),
        _utc_timestamp("computed_at"),
        sa.PrimaryKeyConstraint("day", "currency", name="pk_daily_revenue"),
    )
    op.create_table(
        "inventory_snapshots",
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("reserved_unpaid", sa.Integer, nullable=False),
        sa.Column("sold", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("taken_at", "product_id", name="pk_inventory_snapshots"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
        # Room on every heap page lets stock and status updates stay HOT (no new index entries), so
        # concurrent SERIALIZABLE orders touching different rows do not collide on index pages.
        op.execute("ALTER TABLE products SET (fillfactor = 50)")
        op.execute("ALTER TABLE orders SET (fillfactor = 70)")
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{operation.lower()} BEFORE {operation} ON ledger_entries "
                f"BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: {operation} refused'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_entries_append_only ON ledger_entries")
        op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_table("inventory_snapshots")
    op.drop_table("daily_revenue")
    op.drop_table("notification_log")
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_ledger_entries_order_id", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("payments")
    op.drop_table("order_intake")
    op.drop_table("order_items")
    op.drop_index("ix_orders_status", table_name="orders")
    op.drop_table("orders")
    op.drop_table("products")
