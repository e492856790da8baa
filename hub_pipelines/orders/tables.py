"""SQLAlchemy Core descriptions of the order ledger's tables (created by migrations 0002_orders_ledger and 0006).

Money is always integer minor units (cents) beside an ISO 4217 currency code; nothing here is a float.
`partition` and `offset` are SQL keywords: SQLAlchemy quotes them, hand-written SQL must too.
"""

from __future__ import annotations

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import NAMING_CONVENTION

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

AutoIncrementId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

RESERVED = "RESERVED"
PAID = "PAID"
PAYMENT_UNKNOWN = "PAYMENT_UNKNOWN"
FAILED = "FAILED"
FINAL_STATUSES = frozenset({PAID, FAILED})
OPEN_STATUSES = (RESERVED, PAYMENT_UNKNOWN)
"""An order in these still awaits its payment outcome; every other status is final."""


def _utc_timestamp(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


products = sa.Table(
    "products",
    metadata,
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    _utc_timestamp("updated_at"),
    sa.CheckConstraint("stock >= 0", name="stock_not_negative"),
    sa.CheckConstraint("unit_price_minor >= 0", name="price_not_negative"),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
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
    # What the order asked for (`OrderRequest.request_sha256`): a reused key with another is a conflict.
    sa.Column("request_sha256", sa.Text),
    # When the order, still without a payment outcome past the bound, was paged (`overdue_payments.py`).
    _utc_timestamp("outcome_overdue_paged_at", nullable=True),
    # An idempotency key is the customer's own: another customer's same key is another order.
    sa.UniqueConstraint("customer_id", "idempotency_key"),
    sa.Index("ix_orders_status", "status"),
)

order_items = sa.Table(
    "order_items",
    metadata,
    # No foreign key to orders: items are written in the order's own transaction, and the key check
    # would read the orders index under SSI, making concurrent orders abort each other.
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True),
    sa.Column("product_id", sa.Text, sa.ForeignKey("products.product_id"), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
)

order_intake = sa.Table(
    "order_intake",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("order_id", sa.Text),
    sa.Column("reason", sa.Text),
    _utc_timestamp("processed_at"),
)

ledger_attempts = sa.Table(
    "ledger_attempts",
    metadata,
    # "event <topic> partition <p> offset <o>" or "order <order id>": what an operator searches for.
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
    _utc_timestamp("updated_at"),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("order_id", sa.Text, sa.ForeignKey("orders.order_id"), primary_key=True),
    sa.Column("gateway_reference", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("detail", sa.Text),
    _utc_timestamp("recorded_at"),
)

ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("entry_id", AutoIncrementId, primary_key=True, autoincrement=True),
    sa.Column("posting_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("debit_minor", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("credit_minor", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("memo", sa.Text, nullable=False),
    _utc_timestamp("created_at"),
    sa.CheckConstraint(
        "(debit_minor > 0 AND credit_minor = 0) OR (credit_minor > 0 AND debit_minor = 0)", name="one_sided"
    ),
    sa.Index("ix_ledger_entries_order_id", "order_id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", AutoIncrementId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("traceparent", sa.Text, nullable=False),
    _utc_timestamp("created_at"),
    _utc_timestamp("sent_at", nullable=True),
    sa.Index(
        "ix_outbox_unsent",
        "id",
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    ),
)

notification_log = sa.Table(
    "notification_log",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("last_error", sa.Text),
    _utc_timestamp("created_at"),
    _utc_timestamp("updated_at"),
)

daily_revenue = sa.Table(
    "daily_revenue",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("revenue_minor", sa.BigInteger, nullable=False),
    _utc_timestamp("computed_at"),
)

inventory_snapshots = sa.Table(
    "inventory_snapshots",
    metadata,
    sa.Column("taken_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("reserved_unpaid", sa.Integer, nullable=False),
    sa.Column("sold", sa.Integer, nullable=False),
)
