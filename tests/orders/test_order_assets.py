"""The orders assets materialized with the local (embedded) resources: the whole path on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from hub_pipelines.assets.orders import downstream, ledger
from hub_pipelines.core.schema import upgrade_schema
from hub_pipelines.demo.feeder import seed_demo_catalog
from hub_pipelines.orders.outbox import EVENT_ID_HEADER, TRACEPARENT_HEADER
from hub_pipelines.orders.pii import new_key_setting
from hub_pipelines.resources.cache import InProcessCache
from hub_pipelines.resources.notifier import LogNotifier
from hub_pipelines.resources.orders.customer_notifications import LocalNotificationFile
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import SqliteDatabase
from hub_pipelines.resources.topics import LocalTopicLog
from tests.orders.support import HMAC_SECRET, Inbox, order_event


def test_order_assets_process_a_batch_locally_and_every_check_passes(tmp_path: Path) -> None:
    database = SqliteDatabase(path=str(tmp_path / "hub.sqlite3"))
    upgrade_schema(database.engine)
    seed_demo_catalog(database)
    topics = LocalTopicLog(root=str(tmp_path / "topics"))
    topics.create_topic("order-events", 1)
    Inbox(database).land_events(
        [
            order_event(customer="c-1", items=[("p-100", 2, "24.90")]),
            order_event(customer="c-2", items=[("p-300", 1, "12.50"), ("p-200", 1, "59.00")]),
            order_event(customer="c-3", items=[("p-300", 1, "99.00")]),
        ]
    )
    notifications = tmp_path / "notifications.jsonl"
    resources = {
        "database": database,
        "cache": InProcessCache(),
        "topics": topics,
        "payment_gateway": ApprovingLocalGateway(),
        "pager": LogNotifier(),
        "customer_notifier": LocalNotificationFile(path=str(notifications)),
        "order_settings": OrderLedgerSettings(hmac_secret=HMAC_SECRET, pii_keys=new_key_setting()),
    }

    result = dg.materialize(
        [
            ledger.order_ledger,
            downstream.outbox_relay,
            downstream.order_notifications,
            downstream.inventory_snapshot,
        ],
        resources=resources,
    )

    assert result.success
    checks = result.get_asset_check_evaluations()
    # The WARN check times produce -> landed, which a loaded machine may trip; the others prove the book.
    assert checks and all(check.passed for check in checks if check.severity == dg.AssetCheckSeverity.ERROR)
    ledger_metadata = result.asset_materializations_for_node("orders__order_ledger")[0].metadata
    assert ledger_metadata["orders_paid"].value == 2
    assert ledger_metadata["orders_rejected"].value == 1
    assert ledger_metadata["total_value_minor_USD"].value == 2 * 2490 + 1250 + 5900
    published = topics.read_range("order-events", 0, 0, 100)
    assert [json.loads(m.value)["type"] for m in published].count("order.paid") == 2
    assert all(
        m.headers[EVENT_ID_HEADER] and m.headers[TRACEPARENT_HEADER].startswith(b"00-") for m in published
    )
    assert len(notifications.read_text().splitlines()) == 4
    revenue = dg.materialize(
        [downstream.daily_revenue],
        resources=resources,
        partition_key=ledger_metadata_day(database),
    )
    assert revenue.success
    assert revenue.asset_materializations_for_node("orders__daily_revenue")[0].metadata["orders"].value == 2


def ledger_metadata_day(database: SqliteDatabase) -> str:
    import sqlalchemy as sa

    from hub_pipelines.orders.tables import orders

    with database.transaction() as connection:
        paid_at = connection.execute(sa.select(sa.func.min(orders.c.paid_at))).scalar_one()
    return paid_at.date().isoformat()
