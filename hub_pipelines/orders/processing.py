"""The order batch processor: one batch of inbox events -> validated -> priced -> reserved -> paid -> recorded.

Each order runs its phases in a worker thread (as many at once as a `VegasLimiter` admits, so gateway
latency overlaps instead of adding up, and a fast gateway does not pile threads onto the GIL): the reserve transaction (SERIALIZABLE; on PostgreSQL one for a group of orders) commits before the gateway is
called, and the outcome is recorded in a later transaction (PAID ones group-committed with other
orders' by `PaidRecorder`), so no row lock is ever held across a gateway call. A crash
anywhere leaves each order in a recorded state the next batch resumes from: events without an intake
record are taken again; for RESERVED and PAYMENT_UNKNOWN orders the gateway is first asked for a charge
already made for the order (the idempotency key may have expired since), then charged again with the
same key, never another.

One order never stops the others: a rejection is dead-lettered; any other error of one event or one
order (a bug, a row the database refuses) is counted in `ledger_attempts` and the batch goes on; after
`max_attempts` failures, across batches and processes, the event is dead-lettered (the order kept
out of reconciliation) with `internal: <ExceptionType>` and a page (`ledger_pages`). Only an outage of
the database or of the rate limit's store fails the batch: every order would fail alike, and none
should be parked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from hub_pipelines.core.concurrency_limit import VegasLimiter
from hub_pipelines.core.platform_tables import topic_inbox
from hub_pipelines.core.ports import (
    DECLINED,
    ChargeOutcomeHidden,
    ChargeRequest,
    GatewayUnavailable,
    Notifier,
    PaymentGateway,
    PaymentOutcomeUnknown,
    SqlDatabase,
)
from hub_pipelines.core.rate_limit import RateLimiter, RateLimitStoreUnavailable
from hub_pipelines.core.sql import is_serialization_failure
from hub_pipelines.orders.attempts import event_subject, order_subject, record_failure, unpark
from hub_pipelines.orders.authenticity import EventAuthenticator, UnauthenticEvent
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.dead_letters import take_back_parked
from hub_pipelines.orders.held_connections import HeldConnections
from hub_pipelines.orders.idempotency import IdempotencyConflict, conflict_of, order_id_for
from hub_pipelines.orders.intake import InvalidOrderEvent, OrderRequest, parse_order_event
from hub_pipelines.orders.ledger_pages import (
    corrupted_row_page,
    hidden_outcome_page,
    parked_event_page,
    parked_order_page,
)
from hub_pipelines.orders.metrics import BatchReport, OrderOutcome
from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed, PiiKeyError
from hub_pipelines.orders.pricing import PricedOrder, PriceRejected, price_order
from hub_pipelines.orders.recorder import PaidRecorder
from hub_pipelines.orders.reservation import (
    PARKED,
    InsufficientStock,
    IntakePosition,
    Reservation,
    ReservationWrites,
    record_rejection,
    reservation_writes,
    reserve_order,
)
from hub_pipelines.orders.reservation_groups import reserve_group
from hub_pipelines.orders.sealed_payloads import open_inbox_payload
from hub_pipelines.orders.settlement import (
    compensate,
    forget_hidden,
    pending_payments,
    record_hidden,
    record_paid,
    record_unknown,
)
from hub_pipelines.orders.tables import order_intake

if TYPE_CHECKING:
    from hub_pipelines.analytics.alerting import Alert

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

Placement = Callable[[], OrderOutcome] | OrderOutcome
"""What is left to do for one admitted order: its outcome, or the work that ends in it."""

AlertHook = Callable[[str, str], None]
"""Called with (order id, or the position of an event that never became an order; reason) for every
alert, paged or not: an order compensated, an idempotency conflict, a corrupted inbox row, a hidden
charge outcome, an event or order parked after repeated internal errors."""


class RateLimitExceeded(ValueError):
    """The customer has placed more orders than the per-customer rate allows."""


class CorruptedInboxRow(ValueError):
    """A stored inbox row does not read back: its sealed payload fails authentication under a key the
    keyring holds (garbled or truncated at rest), or its headers are not a map of text."""


REJECTIONS = (
    CorruptedInboxRow,
    UnauthenticEvent,
    InvalidOrderEvent,
    RateLimitExceeded,
    PriceRejected,
    InsufficientStock,
    IdempotencyConflict,
)


def outages() -> tuple[type[Exception], ...]:
    """Errors that say a service is down, not that an order is bad: they fail the batch, which is retried.

    A function, so psycopg (raised raw on held PostgreSQL connections) loads only when one is caught."""
    import psycopg

    return (
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        RateLimitStoreUnavailable,
    )


ADMISSION_CHUNK = 32
"""Events one admission task takes: few enough that the rate limit's round trips of a chunk still
overlap with other chunks'."""

PLACE_ORDER = "place order"
RESERVE_ORDER_ROWS = "reserve order"
"""Names of an order's two stretches of work when its group reserves it: its rows, then its charge."""


def log_alert(subject: str, reason: str) -> None:
    logger.error("ALERT %s: %s", subject, reason)


def _retry(error: Exception, seconds: float, order_id: str | None = None) -> OrderOutcome:
    """An internal error counted towards parking: the event or order is taken again next batch."""
    kind = type(error).__name__
    return OrderOutcome("retry", seconds, order_id=order_id, reason=f"{kind}: {error}", reason_kind=kind)


@dataclass(frozen=True)
class InboxEvent:
    """An inbox row opened; a corrupted one keeps its stored (sealed) bytes and says what is wrong."""

    position: IntakePosition
    payload: bytes
    headers: Mapping[str, str]
    corrupted: CorruptedInboxRow | None = None


@dataclass(frozen=True)
class AdmittedOrder:
    """An event that passed authenticity, validation and the rate limit, not yet priced."""

    event: InboxEvent
    request: OrderRequest
    seconds: float


@dataclass
class OrderBatchProcessor:
    """Processes the order inbox in batches into the ledger: admit every event, warm the catalog
    once, then place the orders (the ledger itself is the tables it writes, `orders/ledger.py`).

    On PostgreSQL the batch's thread reserves the admitted orders in groups, in offset order, each
    group one SERIALIZABLE transaction (`reserve_group`; twice the in-flight limit, at least 8 and at
    most `max_reserve_group`, halved after a group lost a race), and hands each reserved order to a
    worker thread that charges and records it, while it reserves the next group. An order the group
    did not reserve is placed on its own, as every order is on SQLite. Worker threads place orders
    (reserve -> charge -> record), as many at once up to their gateway call's answer as the limiter
    admits (an order waiting for its PAID commit has given its slot back):
    between `min_in_flight` and `max_in_flight`, raised while the gateway call's latency stays near
    the lowest seen (a slow gateway: more calls overlap) and lowered when it rises (CPU-bound: the
    answering threads queue on the GIL); the limit carries over from batch to batch. The gateway
    call, not the whole order, teaches it: an order's own time also holds its waits for its
    reservation group and for the PAID group commit, which grow with the orders in flight by design
    (larger groups), and read as a queue they held the limit at 29-51 with a 50 ms gateway, 251-393
    orders/s, where 79-90 in flight serve 386-480 (docs/benchmarks.md, "Issue 16: the Stripe call
    over libcurl, the in-flight limit learned from the gateway call"). At
    most `reserve_concurrency` of them run a reserve transaction at a time, which
    keeps the SERIALIZABLE transactions few and short (more would only queue inside PostgreSQL and
    collide on the same rows). PAID outcomes are group-committed by one `PaidRecorder`. Beyond one
    core, run one ledger per lane of the topic (processes, Dagster runs): `lane` of `lanes` takes the
    events of the partitions p with p % lanes == lane (`hub_pipelines/landing/lanes.py`).
    """

    database: SqlDatabase
    catalog: Catalog
    gateway: PaymentGateway
    authenticator: EventAuthenticator
    rate_limiter: RateLimiter | None = None
    cipher: PiiCipher | None = None
    alert: AlertHook = log_alert
    pager: Notifier | None = None
    """Where the alerts that need a person are paged (`ledger_pages`); without one they are only logged."""
    topic: str = "orders"
    lane: int = 0
    lanes: int = 1
    min_in_flight: int = 2
    max_in_flight: int = 256
    reserve_concurrency: int = 8
    max_reserve_group: int = 32
    stale_after_s: float = 60.0
    max_attempts: int = 3
    clock: Callable[[], float] = field(default=time.perf_counter)

    def __post_init__(self) -> None:
        self._reserving = HeldConnections(self.database, self.reserve_concurrency)
        self._recorder: PaidRecorder | None = None
        self.in_flight_limit = VegasLimiter(self.min_in_flight, self.max_in_flight)
        self._worker = threading.local()
        self._group_cap = max(2, self.max_reserve_group)
        self._groups_lost = 0

    def process_batch(self, limit: int = 5000) -> BatchReport:
        """Reconcile orders left without a payment outcome, then take up to `limit` new inbox events."""
        started = self.clock()
        self._groups_lost = 0
        self.catalog.refresh()
        self.catalog.reset_stats()
        pending = pending_payments(self.database, stale_after_s=self.stale_after_s, limit=limit)
        events = self.unprocessed_events(limit)
        with (
            PaidRecorder(self.database) as recorder,
            # Room for as many orders waiting for their PAID commit as there are gateway calls.
            ThreadPoolExecutor(
                max_workers=2 * self.in_flight_limit.max_limit, thread_name_prefix="order"
            ) as pool,
        ):
            self._recorder = recorder
            try:
                reconciled = self._limited(
                    pool, lambda order: self._settle(order.charge, self.clock(), reconciling=True), pending
                )
                admitted = self._admit_all(pool, events)
                self._warm_catalog(admitted)
                outcomes = self._place_all(pool, admitted)
            finally:
                self._recorder = None
                self._reserving.close()
        return BatchReport.of(
            outcomes,
            reconciled,
            cache=self.catalog.reset_stats(),
            breaker_state=self.gateway.breaker_state(),
            elapsed_s=self.clock() - started,
            in_flight_limit=self.in_flight_limit.limit,
            in_flight_limit_peak=self.in_flight_limit.peak_limit,
            groups_lost_to_races=self._groups_lost,
        )

    def _admit_all(
        self, pool: ThreadPoolExecutor, events: Sequence[InboxEvent]
    ) -> list[AdmittedOrder | OrderOutcome]:
        """`admit` every event, in order; a task admits `ADMISSION_CHUNK` events one after the other,
        so a batch pays the pool's hand-over once per chunk, not once per event."""
        chunks = [events[start : start + ADMISSION_CHUNK] for start in range(0, len(events), ADMISSION_CHUNK)]
        admitted = self._limited(pool, lambda chunk: [self.admit(event) for event in chunk], chunks)
        return [order for chunk in admitted for order in chunk]

    def _warm_catalog(self, admitted: list[AdmittedOrder | OrderOutcome]) -> None:
        """Load every product the batch asks for at once; only a shortcut, since each order looks its
        products up again, so a failure is logged and left to the orders that meet it."""
        try:
            self.catalog.products(
                item.product_id
                for order in admitted
                if isinstance(order, AdmittedOrder)
                for item in order.request.items
            )
        except outages():
            raise
        except Exception:
            logger.exception("warming the catalog for the batch failed; orders look their products up")

    def _limited(
        self,
        pool: ThreadPoolExecutor,
        work: Callable[[Item], Result],
        items: Iterable[Item],
    ) -> list[Result]:
        """`work` over `items` on the pool, in order, each started when the in-flight limit admits it."""
        futures = [self._start(pool, functools.partial(work, item)) for item in items]
        return [future.result() for future in futures]

    def _start(self, pool: ThreadPoolExecutor, work: Callable[[], Result]) -> Future[Result]:
        """`work` on the pool once the in-flight limit admits it (`_limited`, for one item). Its slot
        is given back when the gateway answers (`_gateway_answered`), or else when the work ends."""
        limiter = self.in_flight_limit

        def run() -> Result:
            self._worker.holds_slot = True
            try:
                return work()
            finally:
                if self._worker.holds_slot:
                    self._worker.holds_slot = False
                    limiter.release(None)

        limiter.acquire()
        try:
            return pool.submit(run)
        except BaseException:
            limiter.release(None)
            raise

    def _place_all(
        self, pool: ThreadPoolExecutor, admitted: list[AdmittedOrder | OrderOutcome]
    ) -> list[OrderOutcome]:
        """Place every admitted order, reserving them in groups on PostgreSQL (see the class)."""
        if self.database.dialect != "postgresql" or self.max_reserve_group < 2:
            return self._limited(pool, self._place_isolated, admitted)
        futures: list[Future[OrderOutcome]] = []
        taken = 0
        while taken < len(admitted):
            size = min(max(2 * self.in_flight_limit.limit, 8), self._group_cap)
            group, taken = admitted[taken : taken + size], taken + size
            for placement in self._reserve_group(group):
                if isinstance(placement, OrderOutcome):
                    done: Future[OrderOutcome] = Future()
                    done.set_result(placement)
                    futures.append(done)
                else:
                    futures.append(self._start(pool, placement))
        return [future.result() for future in futures]

    def _reserve_group(self, group: Sequence[AdmittedOrder | OrderOutcome]) -> list[Placement]:
        """Price the group's orders and reserve those priced in one transaction; an order not
        reserved there (refused, or the group failed) is left to `place` on its own."""
        placements: list[Placement] = []
        grouped: list[tuple[int, AdmittedOrder, PricedOrder, ReservationWrites, float]] = []
        for admitted in group:
            if isinstance(admitted, OrderOutcome):
                placements.append(admitted)
                continue
            started = self.clock() - admitted.seconds
            placements.append(functools.partial(self._place_isolated, admitted))
            try:
                with self.order_context(admitted, RESERVE_ORDER_ROWS):
                    priced = self._priced(admitted.request)
                    writes = reservation_writes(admitted.event.position, priced, self.cipher)
            except outages():
                raise
            except Exception:
                continue  # placed on its own, which names the reason
            grouped.append((len(placements) - 1, admitted, priced, writes, started))
        if not grouped:
            return placements
        try:
            with self._reserving.slot() as connection:
                assert connection is not None
                reservations = reserve_group(
                    connection, [(priced, writes) for _, _, priced, writes, _ in grouped], attempts=1
                )
        except Exception as failed:
            # psycopg's SerializationFailure is an OperationalError, which otherwise says an outage.
            lost_race = is_serialization_failure(failed)
            if isinstance(failed, outages()) and not lost_race:
                raise
            # A group that lost a race (another ledger's group held its products) is not run again:
            # it would mostly lose again to that ledger's next group. Its orders are placed one by
            # one, and groups shrink until they stop colliding (and grow back by one per group).
            self._group_cap = max(2, self._group_cap // 2)
            if lost_race:
                self._groups_lost += 1
                logger.info(
                    "a group of %d orders lost a race (%s); each is placed on its own, groups of at most %d",
                    len(grouped),
                    failed,
                    self._group_cap,
                )
            else:
                logger.exception(
                    "reserving %d orders as a group failed; each is placed on its own", len(grouped)
                )
            return placements
        self._group_cap = min(self.max_reserve_group, self._group_cap + 1)
        for (index, admitted, priced, _, started), reservation in zip(grouped, reservations, strict=True):
            if reservation is not None:
                placements[index] = functools.partial(
                    self._settle_reserved, admitted, priced, reservation, started
                )
        return placements

    def _priced(self, request: OrderRequest) -> PricedOrder:
        return price_order(request, self.catalog.products(item.product_id for item in request.items))

    def order_context(
        self, admitted: AdmittedOrder, name: str = PLACE_ORDER
    ) -> contextlib.AbstractContextManager[object]:
        """Entered around the work of one order, `name` saying which (placing it, or building its rows
        for a group's reservation); a subclass may trace it."""
        return contextlib.nullcontext()

    def unprocessed_events(self, limit: int) -> list[InboxEvent]:
        """Inbox events of the topic's partitions in this ledger's lane that have no intake record
        yet, in partition and offset order."""
        with self.database.transaction() as connection:
            rows = connection.execute(
                sa.select(
                    topic_inbox.c.topic,
                    topic_inbox.c.partition,
                    topic_inbox.c.offset,
                    topic_inbox.c.event_id,
                    topic_inbox.c.payload,
                    topic_inbox.c.headers,
                    topic_inbox.c.payload_key_id,
                )
                .select_from(
                    topic_inbox.outerjoin(
                        order_intake,
                        sa.and_(
                            order_intake.c.topic == topic_inbox.c.topic,
                            order_intake.c.partition == topic_inbox.c.partition,
                            order_intake.c.offset == topic_inbox.c.offset,
                        ),
                    )
                )
                .where(
                    topic_inbox.c.topic == self.topic,
                    order_intake.c.offset.is_(None),
                    topic_inbox.c.partition % self.lanes == self.lane if self.lanes > 1 else sa.true(),
                )
                .order_by(topic_inbox.c.partition, topic_inbox.c.offset)
                .limit(limit)
            ).all()
        opened = [_inbox_event(row) for row in rows]
        _refuse_a_key_that_opens_nothing(opened)
        return [event for event, _, _ in opened]

    def admit(self, event: InboxEvent) -> AdmittedOrder | OrderOutcome:
        """Authenticity, validation and the per-customer rate limit; a rejection is recorded here."""
        started = self.clock()
        idempotency_key: str | None = None
        try:
            if event.corrupted is not None:
                raise event.corrupted
            self.authenticator.verify(event.payload, event.headers)
            request = parse_order_event(event.payload)
            idempotency_key = request.idempotency_key
            # Spent once per order (customer + key), so a redelivery, a rerun after a crash or an
            # overlapping ledger never spends the customer's budget again.
            order_id = order_id_for(request.customer_id, request.idempotency_key)
            if self.rate_limiter is not None and not self.rate_limiter.spend_once(
                request.customer_id, order_id
            ):
                raise RateLimitExceeded(
                    f"rate limit {self.rate_limiter.rate} exceeded for customer {request.customer_id}"
                )
        except REJECTIONS as why:
            return self._reject(event, why, idempotency_key, started)
        except outages():
            raise
        except Exception as error:
            return self._event_failed(event, error, started)
        return AdmittedOrder(event, request, self.clock() - started)

    def _place_isolated(self, admitted: AdmittedOrder | OrderOutcome) -> OrderOutcome:
        """`place`, with an unexpected error of this one event counted (and parked at the limit)."""
        if isinstance(admitted, OrderOutcome):
            return admitted
        try:
            return self.place(admitted)
        except outages():
            raise
        except Exception as error:
            return self._event_failed(admitted.event, error, self.clock() - admitted.seconds)

    def place(self, admitted: AdmittedOrder | OrderOutcome) -> OrderOutcome:
        """Price, reserve, charge and record one admitted order (an outcome passes through)."""
        if isinstance(admitted, OrderOutcome):
            return admitted
        with self.order_context(admitted):
            return self._place(admitted)

    def _place(self, admitted: AdmittedOrder) -> OrderOutcome:
        started = self.clock() - admitted.seconds
        event, request = admitted.event, admitted.request
        try:
            priced = self._priced(request)
            with self._reserving.slot() as connection:
                reservation = reserve_order(
                    self.database, event.position, priced, self.cipher, connection=connection
                )
        except (PriceRejected, InsufficientStock) as why:
            # A reused key with other items may fail on them first: the conflict is the reason to give.
            conflict = conflict_of(self.database, request, event.position.event_id)
            return self._reject(event, conflict or why, request.idempotency_key, started)
        except REJECTIONS as why:
            return self._reject(event, why, request.idempotency_key, started)
        return self._charge_reserved(request, priced, reservation, started)

    def _settle_reserved(
        self, admitted: AdmittedOrder, priced: PricedOrder, reservation: Reservation, started: float
    ) -> OrderOutcome:
        """Charge and record an order its group reserved, an unexpected error counted as in `_place_isolated`."""
        try:
            with self.order_context(admitted):
                return self._charge_reserved(admitted.request, priced, reservation, started)
        except outages():
            raise
        except Exception as error:
            return self._event_failed(admitted.event, error, started)

    def _charge_reserved(
        self, request: OrderRequest, priced: PricedOrder, reservation: Reservation, started: float
    ) -> OrderOutcome:
        if not reservation.claimed:
            return OrderOutcome("skipped", self.clock() - started, order_id=reservation.order_id)
        if reservation.duplicate:
            return OrderOutcome("duplicate", self.clock() - started, order_id=reservation.order_id)
        assert reservation.order_id is not None
        charge = ChargeRequest(
            reservation.order_id,
            priced.total_minor,
            priced.currency,
            request.customer_id,
            request.payment_method,
        )
        settled = self._settle(charge, started)
        return dataclasses.replace(
            settled, items=priced.item_count, serialization_retries=reservation.attempts - 1
        )

    def _reject(
        self, event: InboxEvent, why: Exception, idempotency_key: str | None, started: float
    ) -> OrderOutcome:
        claimed = record_rejection(self.database, event.position, str(why), event.payload, idempotency_key)
        position = event.position
        subject = event_subject(position.topic, position.partition, position.offset)
        if claimed and isinstance(why, CorruptedInboxRow):
            self._raise_alert(subject, str(why), corrupted_row_page(position, str(why)))
        elif claimed and isinstance(why, IdempotencyConflict):
            self._raise_alert(subject, str(why))
        return OrderOutcome(
            "rejected" if claimed else "skipped",
            self.clock() - started,
            reason=str(why),
            reason_kind=type(why).__name__,
        )

    def _event_failed(self, event: InboxEvent, error: Exception, started: float) -> OrderOutcome:
        """Count the event's failure; at `max_attempts`, dead-letter it as internal and page (a page the
        pager did not take takes the dead letter back: the next batch tries the event, and parks and
        pages it again)."""
        position = event.position
        subject = event_subject(position.topic, position.partition, position.offset)
        reason = record_failure(self.database, subject, error, self.max_attempts)
        if reason is None:
            return _retry(error, self.clock() - started)
        claimed = record_rejection(self.database, position, reason, event.payload, outcome=PARKED)
        if claimed and not self._raise_alert(subject, reason, parked_event_page(position, reason)):
            take_back_parked(self.database, position)
            return _retry(error, self.clock() - started)
        return OrderOutcome(
            "parked" if claimed else "skipped", self.clock() - started, reason=reason, reason_kind="internal"
        )

    def _settle(self, charge: ChargeRequest, started: float, *, reconciling: bool = False) -> OrderOutcome:
        """`_settle_charge`, with an unexpected error of this order counted: the order stays open and
        the next batch reconciles it with the same key; at `max_attempts` it is parked and paged (a page
        the pager did not take gives the order back: the next batch reconciles it, and a failure there
        parks and pages it again)."""
        try:
            return self._settle_charge(charge, started, reconciling=reconciling)
        except outages():
            raise
        except Exception as error:
            reason = record_failure(self.database, order_subject(charge.order_id), error, self.max_attempts)
            if reason is None:
                return _retry(error, self.clock() - started, charge.order_id)
            if not self._raise_alert(charge.order_id, reason, parked_order_page(charge.order_id, reason)):
                unpark(self.database, order_subject(charge.order_id))
                return _retry(error, self.clock() - started, charge.order_id)
            return OrderOutcome(
                "parked",
                self.clock() - started,
                order_id=charge.order_id,
                reason=reason,
                reason_kind="internal",
            )

    def _settle_charge(self, charge: ChargeRequest, started: float, *, reconciling: bool) -> OrderOutcome:
        """Charge (when reconciling, first look for the charge already made, then re-ask the gateway
        with the same key) and record what it answered."""
        calling = self.clock()
        try:
            result = (self.gateway.find_charge(charge) if reconciling else None) or self.gateway.charge(
                charge
            )
        except GatewayUnavailable as unavailable:
            return OrderOutcome(
                "deferred", self.clock() - started, order_id=charge.order_id, reason=str(unavailable)
            )
        except PaymentOutcomeUnknown as unknown:
            if not isinstance(unknown, ChargeOutcomeHidden):
                record_unknown(self.database, charge.order_id, str(unknown))
            elif record_hidden(self.database, charge.order_id, str(unknown)):
                self._page_hidden(charge.order_id, str(unknown))
            return OrderOutcome(
                "payment_unknown",
                self.clock() - started,
                order_id=charge.order_id,
                payment_attempts=unknown.attempts,
                reason=str(unknown),
            )
        answered = self.clock()
        self._gateway_answered(answered - calling)
        reason = None
        if result.outcome == DECLINED:
            reason = f"payment declined: {result.reason or 'no reason given'}"
            if compensate(self.database, charge, reason, result.reference):
                self._raise_alert(charge.order_id, reason)
        elif self._recorder is not None:
            self._recorder.record(charge, result)
        else:
            record_paid(self.database, charge, result)
        return OrderOutcome(
            "failed" if reason else "paid",
            self.clock() - started,
            order_id=charge.order_id,
            amount_minor=charge.amount_minor,
            currency=charge.currency,
            payment_attempts=result.attempts,
            reason=reason,
        )

    def _gateway_answered(self, latency_s: float) -> None:
        """Give the worker's in-flight slot back as soon as the gateway answered, and teach the limit
        the call's latency. The limit bounds gateway calls, the latency it learns from; an order
        waiting for its PAID group commit only makes that group larger. Holding the slot through the
        commit (3x the call's time at 0 ms gateway latency) left workers idle half the time
        (docs/benchmarks.md, "Issue 16: the in-flight slot given back at the gateway's answer")."""
        if getattr(self._worker, "holds_slot", False):
            self._worker.holds_slot = False
            self.in_flight_limit.release(latency_s)

    def _page_hidden(self, order_id: str, reason: str) -> None:
        """Page the order `record_hidden` just recorded hidden; a page the pager did not take is given
        back, so the next batch that still finds the charge hidden records it, and pages, again."""
        if not self._raise_alert(order_id, reason, hidden_outcome_page(order_id, reason)):
            forget_hidden(self.database, order_id, reason)

    def _raise_alert(self, subject: str, reason: str, page: Alert | None = None) -> bool:
        """Log the alert through the hook, and send its `page` (if any) to the pager first, the log line
        saying whether the pager took it; False when a page was not delivered."""
        delivered = True
        if page is not None and self.pager is not None:
            delivered = _page(self.pager, subject, page)
            reason = (
                f"{reason} [paged, dedup key {page.dedup_key}]"
                if delivered
                else f"{reason} [NOT paged: the pager did not take {page.dedup_key}]"
            )
        try:
            self.alert(subject, reason)
        except Exception:
            logger.exception("alert hook failed for %s", subject)
        return delivered


def _page(pager: Notifier, subject: str, page: Alert) -> bool:
    """Whether the pager took the page; a pager that raises (its failures should answer 0) is logged."""
    try:
        return pager.send([page]) == 1
    except Exception:
        logger.exception("paging %s (%s) failed", subject, page.dedup_key)
        return False


def _inbox_event(row: sa.Row) -> tuple[InboxEvent, str | None, bool]:
    """The event of an inbox row, the key id its payload is sealed under, and whether it opened.

    A key id the keyring does not hold raises `PiiKeyError` (the configuration is wrong for every
    row: the batch stops and the run pages); a row that fails to open under a key it holds, or whose
    headers are not text, is only that row's fault."""
    topic, partition, offset, event_id, stored, headers, key_id = row
    position = IntakePosition(topic, int(partition), int(offset), event_id)
    where = f"{topic} partition {position.partition} offset {position.offset}"
    try:
        payload = open_inbox_payload(topic, position.partition, position.offset, stored, key_id)
    except PiiDecryptionFailed:
        corrupted = CorruptedInboxRow(
            f"{where}: the stored payload does not open with key {key_id!r} (garbled or truncated at "
            "rest); its sealed bytes are kept in the dead letter"
        )
        return InboxEvent(position, bytes(stored), {}, corrupted), key_id, False
    if not isinstance(headers, Mapping) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
    ):
        corrupted = CorruptedInboxRow(f"{where}: the stored headers are not a map of text to text")
        return InboxEvent(position, payload, {}, corrupted), key_id, True
    return InboxEvent(position, payload, dict(headers)), key_id, True


def _refuse_a_key_that_opens_nothing(opened: Sequence[tuple[InboxEvent, str | None, bool]]) -> None:
    """Raise `PiiKeyError` when a key opens none of two or more rows sealed under it in the batch.

    A key id listed with other bytes than the ones that sealed (a typo in HUB_PII_KEYS, a key
    regenerated under an old id) fails every row alike: that is the configuration's fault, as an
    unknown key id is, and dead-lettering each order instead would leave them all unpaid."""
    tried: dict[str, list[bool]] = {}
    for _, key_id, did_open in opened:
        if key_id is not None:
            tried.setdefault(key_id, []).append(did_open)
    for key_id, outcomes in tried.items():
        if len(outcomes) >= 2 and not any(outcomes):
            first = next(event.position for event, kid, _ in opened if kid == key_id)
            raise PiiKeyError(
                f"PII key {key_id!r} opens none of the {len(outcomes)} inbox rows sealed under it in "
                f"this batch (the first: {first.topic} partition {first.partition} offset {first.offset}): "
                "its bytes in HUB_PII_KEYS are not the ones that sealed them"
            )
