"""Group commit of successful charges: many workers' PAID outcomes share one transaction.

A worker hands its (charge, result) to the recorder and waits for the commit. One writer thread
takes everything that queued up while its previous transaction ran and records it with
`record_paid_many`, so under load a transaction carries many orders, and with a single order in
flight it carries that one at once (no timer, no added wait). Each order's reservation stays its
own SERIALIZABLE transaction; only the PAID write, which moves each order with a guarded update of
its own row, is shared. A failed transaction fails every worker waiting on it, which then reports
its order as it would have with a transaction of its own: the order stays open and is reconciled
with the same idempotency key. A failed transaction of several orders is first tried again order by
order, so one order the database refuses does not fail its neighbours.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from types import TracebackType

from hub_pipelines.core.ports import ChargeRequest, ChargeResult, SqlDatabase
from hub_pipelines.orders.held_connections import HeldConnections
from hub_pipelines.orders.settlement import record_paid_many

_Pending = tuple[ChargeRequest, ChargeResult, "Future[bool]"]


class RecorderClosed(RuntimeError):
    """A charge was handed to a recorder that is no longer running."""


class PaidRecorder:
    """Records PAID outcomes from many threads, committing whatever queued up together."""

    def __init__(self, database: SqlDatabase, *, max_orders_per_transaction: int = 500) -> None:
        self.database = database
        self.max_orders_per_transaction = max_orders_per_transaction
        self.transactions = 0
        import psycopg

        self._connection = HeldConnections(
            database, 1, psycopg.IsolationLevel.READ_COMMITTED, autocommit=True
        )
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write, name="paid-recorder", daemon=True)
        self._writer.start()

    def record(self, charge: ChargeRequest, result: ChargeResult) -> bool:
        """Block until the order's PAID is committed; False when it was already final."""
        if self._closed:
            raise RecorderClosed(f"order {charge.order_id}: the PAID recorder is closed")
        done: Future[bool] = Future()
        self._queue.put((charge, result, done))
        return done.result()

    def close(self) -> None:
        """Record what is queued, then stop the writer."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._writer.join()

    def __enter__(self) -> PaidRecorder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _write(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                self._connection.close()
                return
            batch = [first]
            while len(batch) < self.max_orders_per_transaction:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    stopping = True
                    break
                batch.append(pending)
            self._commit(batch)
        self._connection.close()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self._connection.slot() as held:
                moved = record_paid_many(
                    self.database, [(charge, result) for charge, result, _ in batch], held=held
                )
        except BaseException as failed:
            if len(batch) > 1 and isinstance(failed, Exception):
                for pending in batch:
                    self._commit([pending])
                return
            for _, _, done in batch:
                done.set_exception(failed)
            return
        self.transactions += 1
        for charge, _, done in batch:
            # The same order twice in one transaction moved once: only the first hears True.
            done.set_result(charge.order_id in moved)
            moved.discard(charge.order_id)
