"""PAID outcomes committed together, and ledgers split over inbox partitions by lane."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from hub_pipelines.core.ports import ChargeRequest, ChargeResult
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.recorder import PaidRecorder
from hub_pipelines.orders.settlement import record_paid_many
from hub_pipelines.orders.tables import PAID, RESERVED, orders, outbox, payments
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, order_event


def reserved_charges(
    database: PostgresDatabase, make_processor: ProcessorFactory, count: int
) -> list[ChargeRequest]:
    """`count` orders left RESERVED (the gateway was never reached), as charges to record."""

    class Unreachable(ApprovingLocalGateway):
        def charge(self, request: ChargeRequest) -> ChargeResult:
            from hub_pipelines.core.ports import GatewayUnavailable

            raise GatewayUnavailable("circuit open")

    Inbox(database).land_events(order_event(customer=f"c-{n}") for n in range(count))
    make_processor(Unreachable()).process_batch()
    with database.transaction() as connection:
        rows = connection.execute(
            sa.select(orders.c.order_id, orders.c.total_minor, orders.c.currency, orders.c.customer_id).where(
                orders.c.status == RESERVED
            )
        ).all()
    assert len(rows) == count
    return [
        ChargeRequest(order_id, int(total), currency, customer)
        for order_id, total, currency, customer in rows
    ]


def test_paid_outcomes_of_many_orders_are_recorded_once_in_one_transaction(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory
) -> None:
    charges = reserved_charges(ledger_database, make_processor, 6)
    first = [(charge, ChargeResult("paid", f"pi_{n}")) for n, charge in enumerate(charges[:2])]
    assert record_paid_many(ledger_database, first) == {charge.order_id for charge, _ in first}

    every = [(charge, ChargeResult("paid", f"pi_{n}")) for n, charge in enumerate(charges)]
    moved = record_paid_many(ledger_database, every)

    assert moved == {charge.order_id for charge in charges[2:]}
    with ledger_database.transaction() as connection:
        statuses = set(connection.execute(sa.select(orders.c.status)).scalars())
        charged = connection.execute(sa.select(sa.func.count()).select_from(payments)).scalar_one()
        announced = connection.execute(
            sa.select(sa.func.count()).where(outbox.c.event_type == "order.paid")
        ).scalar_one()
    assert statuses == {PAID}
    assert charged == announced == 6
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_recorder_answers_each_thread_whether_its_order_moved_to_paid(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory
) -> None:
    charges = reserved_charges(ledger_database, make_processor, 8)
    twice = charges + charges[:3]

    with PaidRecorder(ledger_database) as recorder, ThreadPoolExecutor(max_workers=len(twice)) as pool:
        answers = list(pool.map(lambda charge: recorder.record(charge, ChargeResult("paid", "pi")), twice))

    assert answers.count(True) == 8 and answers.count(False) == 3
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)


def test_ledgers_of_two_lanes_each_take_only_their_own_partitions_events(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory
) -> None:
    Inbox(ledger_database, partition=0).land_events(order_event(customer=f"a-{n}") for n in range(3))
    Inbox(ledger_database, partition=1).land_events(order_event(customer=f"b-{n}") for n in range(2))

    second = make_processor(ApprovingLocalGateway(), lane=1, lanes=2).process_batch()
    first = make_processor(ApprovingLocalGateway(), lane=0, lanes=2).process_batch()

    assert second.count("paid") == 2 and first.count("paid") == 3
    with ledger_database.transaction() as connection:
        customers = connection.execute(
            sa.select(orders.c.customer_id).where(orders.c.status == PAID)
        ).scalars()
        assert sorted(customers) == ["a-0", "a-1", "a-2", "b-0", "b-1"]


def test_recorder_fails_only_the_worker_whose_order_the_database_refuses(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory
) -> None:
    charges = reserved_charges(ledger_database, make_processor, 8)
    refused = dataclasses.replace(charges[3], amount_minor=2**70)  # beyond bigint: the database refuses it
    sent = [*charges[:3], refused, *charges[4:]]

    def record(charge: ChargeRequest) -> bool | str:
        try:
            return recorder.record(charge, ChargeResult("paid", "pi"))
        except Exception as failed:
            return type(failed).__name__

    with PaidRecorder(ledger_database) as recorder, ThreadPoolExecutor(max_workers=len(sent)) as pool:
        answers = list(pool.map(record, sent))

    assert answers[:3] + answers[4:] == [True] * 7
    assert isinstance(answers[3], str)
    with ledger_database.transaction() as connection:
        left = connection.execute(sa.select(orders.c.status).where(orders.c.order_id == refused.order_id))
        assert left.scalar_one() == RESERVED
    assert check_invariants(ledger_database).holds(outbox_bound_s=3600)
