"""The ledger's in-flight limit counts gateway calls and learns from their latency, not from the whole
order's."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from hub_pipelines.core.concurrency_limit import VegasLimiter
from hub_pipelines.core.ports import ChargeRequest, ChargeResult
from hub_pipelines.orders import recorder
from hub_pipelines.orders.processing import AdmittedOrder
from hub_pipelines.orders.settlement import record_paid_many
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import Inbox, order_event

GATEWAY_S = 0.05
ORDER_WORK_S = 1.0


class VirtualClock:
    """Time that moves only when the gateway or an order's own work says it took some."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ApprovingGatewayWrapper:
    """The approving gateway behind a test's own `charge` (a Dagster resource cannot keep state)."""

    def __init__(self) -> None:
        self.approving = ApprovingLocalGateway()

    def charge(self, request: ChargeRequest) -> ChargeResult:
        return self.approving.charge(request)

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        return self.approving.find_charge(request)

    def breaker_state(self) -> str:
        return self.approving.breaker_state()


class SlowGateway(ApprovingGatewayWrapper):
    """The approving gateway, each charge taking 50 ms of the clock."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.clock.now += GATEWAY_S
        return super().charge(request)


class RecordingLimiter(VegasLimiter):
    def __init__(self) -> None:
        super().__init__(1, 1)
        self.learned: list[float | None] = []

    def release(self, latency_s: float | None) -> None:
        self.learned.append(latency_s)
        super().release(latency_s)


def test_the_in_flight_limit_learns_the_gateway_calls_latency_not_the_orders(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory
) -> None:
    Inbox(ledger_database).land_events(order_event() for _ in range(3))
    clock = VirtualClock()
    gateway = SlowGateway(clock)
    # One order in flight at a time, so the clock moves by the gateway's 50 ms alone during a charge.
    ledger = make_processor(gateway, clock=clock, min_in_flight=1, max_in_flight=1)
    limiter = RecordingLimiter()
    ledger.in_flight_limit = limiter

    @contextlib.contextmanager
    def order_work_taking_a_second(admitted: AdmittedOrder, *_: object) -> Iterator[None]:
        yield
        clock.now += ORDER_WORK_S

    ledger.order_context = order_work_taking_a_second  # type: ignore[method-assign]

    report = ledger.process_batch()

    assert report.count("paid") == 3
    assert all(outcome.seconds >= ORDER_WORK_S for outcome in report.outcomes)
    # Admission's work (no call to learn from) only frees its slot.
    assert [latency for latency in limiter.learned if latency is not None] == pytest.approx([GATEWAY_S] * 3)


class SecondChargeSignal(ApprovingGatewayWrapper):
    """The approving gateway, setting `second_charged` when its second charge is made."""

    def __init__(self) -> None:
        super().__init__()
        self.charges = 0
        self.second_charged = threading.Event()

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.charges += 1
        if self.charges == 2:
            self.second_charged.set()
        return super().charge(request)


def test_an_order_waiting_for_its_paid_commit_has_given_its_in_flight_slot_back(
    ledger_database: PostgresDatabase, make_processor: ProcessorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    Inbox(ledger_database).land_events(order_event() for _ in range(2))
    gateway = SecondChargeSignal()
    ledger = make_processor(gateway)
    ledger.in_flight_limit = VegasLimiter(1, 1)
    commits_seen_second_charge: list[bool] = []

    def record_paid_after_the_second_charge(*args: object, **kwargs: object) -> set[str]:
        # With the slot held through the commit, the second order could not be charged before this
        # commit ends: the wait would run out (a bound on failure only).
        if not commits_seen_second_charge:
            commits_seen_second_charge.append(gateway.second_charged.wait(timeout=30))
        return record_paid_many(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(recorder, "record_paid_many", record_paid_after_the_second_charge)

    report = ledger.process_batch()

    assert report.count("paid") == 2
    assert commits_seen_second_charge == [True]
