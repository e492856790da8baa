"""Groups of orders reserved in one SERIALIZABLE transaction (`reserve_orders`, migration 0011)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.held_connections import HeldConnections
from hub_pipelines.orders.intake import parse_order_event
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.metrics import BatchReport
from hub_pipelines.orders.pii import PiiCipher
from hub_pipelines.orders.pricing import price_order
from hub_pipelines.orders.reservation import IntakePosition, Reservation, reservation_writes
from hub_pipelines.orders.reservation_groups import reserve_group
from hub_pipelines.orders.reservation_sql import LOCK_RESERVE_GROUPS
from hub_pipelines.orders.tables import order_intake, orders, products
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, encode, order_event, row_holder, seed_catalog, wait_until_blocked_by
from tests.orders.test_order_races import stock_of


def reserve_events(
    database: PostgresDatabase, cipher: PiiCipher, events: list[dict[str, object]]
) -> list[Reservation | None]:
    """The events (at offsets 0, 1, ...) reserved as one group on a held connection."""
    catalog = Catalog(database)
    grouped = []
    for offset, event in enumerate(events):
        request = parse_order_event(encode(event))
        priced = price_order(request, catalog.products(item.product_id for item in request.items))
        position = IntakePosition("orders", 0, offset, request.event_id)
        grouped.append((priced, reservation_writes(position, priced, cipher)))
    held = HeldConnections(database, 1)
    try:
        with held.slot() as connection:
            assert connection is not None
            return reserve_group(connection, grouped)
    finally:
        held.close()


def booked_offsets(database: PostgresDatabase) -> list[int]:
    with database.transaction() as connection:
        return sorted(connection.execute(sa.select(order_intake.c.offset)).scalars())


def test_group_gives_the_last_units_to_the_earliest_offsets_and_leaves_the_short_order_unwritten(
    ledger_database: PostgresDatabase, cipher: PiiCipher
) -> None:
    Catalog(ledger_database).upsert("p-two-left", "Last two prints", "USD", 5000, 2)
    events = [order_event(customer=f"c-{n}", items=[("p-two-left", 1, "50.00")]) for n in range(3)]

    first, second, third = reserve_events(ledger_database, cipher, events)

    assert first is not None and first.claimed and second is not None and second.claimed
    assert third is None
    assert stock_of(ledger_database, "p-two-left") == 0
    assert booked_offsets(ledger_database) == [0, 1]


def test_order_refused_inside_a_group_rolls_back_its_own_writes_only(
    ledger_database: PostgresDatabase, cipher: PiiCipher
) -> None:
    seed_catalog(Catalog(ledger_database))
    repeated = order_event(customer="c-repeat", items=[("p-cup", 2, "12.50")])
    other = order_event(customer="c-other", items=[("p-cup", 1, "12.50")])
    events = [repeated, dict(repeated, event_id="redelivered"), other]

    answers = reserve_events(ledger_database, cipher, events)

    assert [answer is not None for answer in answers] == [True, False, True]
    assert booked_offsets(ledger_database) == [0, 2]
    assert stock_of(ledger_database, "p-cup") == 1000 - 3
    with ledger_database.transaction() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one() == 2


def test_batch_reserving_in_groups_pays_the_stock_and_names_why_each_other_event_was_refused(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Catalog(ledger_database).upsert("p-limited", "Limited print", "USD", 5000, 5)
    repeated = order_event(customer="c-repeat", items=[("p-cup", 1, "12.50")])
    reused_key = order_event(
        customer="c-repeat", idempotency_key=repeated["idempotency_key"], items=[("p-cup", 3, "12.50")]
    )
    events = [order_event(customer=f"c-{n}", items=[("p-limited", 1, "50.00")]) for n in range(8)]
    events += [repeated, dict(repeated, event_id="redelivered"), reused_key]
    events += [order_event(customer="c-late", items=[("p-cup", 1, "12.50")])]
    Inbox(ledger_database).land_events(events)

    report = make_processor(stripe_gateway, max_reserve_group=32).process_batch()

    assert report.count("paid") == 5 + 1 + 1
    assert report.count("duplicate") == 1
    assert report.count("rejected") == 3 + 1
    with ledger_database.transaction() as connection:
        reasons = dict(connection.execute(sa.text('SELECT "offset", reason FROM dead_letters')).all())
    assert sorted(reasons) == [5, 6, 7, 10]
    assert all(reasons[offset].startswith("insufficient stock for Limited print") for offset in (5, 6, 7))
    assert reasons[10].startswith(f"idempotency key {repeated['idempotency_key']!r} of customer 'c-repeat'")
    assert stock_of(ledger_database, "p-limited") == 0
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_group_that_loses_a_serialization_race_is_counted_in_the_batch_report(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Inbox(ledger_database).land_events([order_event(customer="c-race", items=[("p-cup", 1, "12.50")])])
    processor = make_processor(stripe_gateway)
    reports: list[BatchReport] = []
    batch = threading.Thread(target=lambda: reports.append(processor.process_batch()))
    with row_holder(ledger_database) as (connection, pid):
        # Updated and committed while the group's SERIALIZABLE transaction waits on the row: it loses.
        connection.execute(
            sa.update(products).where(products.c.product_id == "p-cup").values(stock=products.c.stock)
        )
        batch.start()
        wait_until_blocked_by(ledger_database, pid, batch.is_alive, "SELECT reserve_orders%")
        connection.commit()
    batch.join()

    (report,) = reports
    assert report.count("paid") == 1
    assert report.serialization_retries == 1
    assert stock_of(ledger_database, "p-cup") == 1000 - 1


def test_group_that_waits_for_another_lanes_group_reserves_after_it_without_losing_a_race(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> None:
    Inbox(ledger_database).land_events([order_event(customer="c-queue", items=[("p-cup", 1, "12.50")])])
    processor = make_processor(stripe_gateway)
    reports: list[BatchReport] = []
    batch = threading.Thread(target=lambda: reports.append(processor.process_batch()))
    with row_holder(ledger_database) as (connection, pid):
        # Another lane's group: it holds the groups' lock and sells the same product.
        connection.execute(sa.text(LOCK_RESERVE_GROUPS))
        connection.execute(
            sa.update(products).where(products.c.product_id == "p-cup").values(stock=products.c.stock - 1)
        )
        batch.start()
        wait_until_blocked_by(ledger_database, pid, batch.is_alive, "LOCK TABLE reserve_group_lock%")
        connection.commit()
    batch.join()

    (report,) = reports
    assert report.count("paid") == 1
    assert report.serialization_retries == 0
    assert stock_of(ledger_database, "p-cup") == 1000 - 2
