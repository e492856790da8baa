"""The nemesis: faults at random moments drawn from the run's seed, at least one a minute.

A run worker is killed with SIGKILL while it is inside a write: the harness watches PostgreSQL for a
transaction that has written and not committed, its client between two statements (idle in
transaction), traces its connection to a run worker's process, stops it (SIGSTOP) and kills it if its
transaction is still open then, then reads the transaction's fate (aborted, so the kill cut the
write). PostgreSQL
is stopped in immediate mode and started again; Redis loses its client connections (CLIENT KILL) or is
restarted; the daemon is killed and started again; the broker goes down for a window of seconds; the
Stripe-protocol server answers 5xx before execution or after it, holds the connection after charging
until the client times out, or answers slowly.

Kinds are dealt from a shuffled deck, each kind once per deck, so a run of ten minutes draws every
kind at least twice; the first fault of a run is always the kill of a run worker mid-write, drawn
again as the fault after next until one has cut a write, and tried once more as the drain begins if none
fired during the load. A fault that could not be made (no run worker inside a write within its
search window) is recorded as not fired, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import sqlalchemy as sa

from chaos import writes
from chaos.deployment import Deployment
from tests.fakes import stripe_server

KILL_RUN_WORKER = "kill -9 run worker"
RESTART_POSTGRES = "restart PostgreSQL"
KILL_REDIS_CONNECTIONS = "kill Redis connections"
RESTART_REDIS = "restart Redis"
RESTART_DAEMON = "restart daemon"
GATEWAY_5XX_BEFORE = "gateway 5xx before execution"
GATEWAY_5XX_AFTER = "gateway 5xx after execution"
GATEWAY_TIMEOUT_AFTER_CHARGE = "gateway timeout after charge"
GATEWAY_SLOW = "gateway slow"
BROKER_OUTAGE = "broker outage"
FAULTS = (
    KILL_RUN_WORKER, RESTART_POSTGRES, KILL_REDIS_CONNECTIONS, RESTART_REDIS, RESTART_DAEMON,
    GATEWAY_5XX_BEFORE, GATEWAY_5XX_AFTER, GATEWAY_TIMEOUT_AFTER_CHARGE, GATEWAY_SLOW, BROKER_OUTAGE,
)  # fmt: skip
WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")
# How long the kill looks for a run worker inside a write during the load. Runs start slowly on a
# loaded machine, but a longer search held every other fault back: in a 2-minute cut at load 16 the
# first kill searched until the load ended and no fault fired during it (the kill comes back as the
# fault after next, and once more as the drain begins).
WRITE_SEARCH_S = 40.0
# After a fault that could not be made, the next one comes this soon at the latest: the search used
# up the minute's wait.
AFTER_NOT_FIRED_S = 10.0
# A run whose load ended before any mid-write kill looks once more while the queued runs drain.
LAST_KILL_SEARCH_S = 300.0
WRITE_POLL_S = 0.05
# How long a killed worker's backend may take to notice (an active statement runs to its end first).
BACKEND_GONE_S = 60.0


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    detail: str


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of a run's process, from the engine event its process logs as it starts. The text is
    the event's `message`: Dagster's own events leave `user_message` empty (which is why the kill never
    found a worker before)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        found = WORKER_PID.search(entry.message)
        if found:
            return int(found.group(1))
    return None


@dataclass(frozen=True)
class Fired:
    detail: str
    kind: str | None = None  # when the fault turned out other than drawn


@dataclass(frozen=True)
class NotFired:
    reason: str


@dataclass
class Nemesis:
    deployment: Deployment
    instance: dg.DagsterInstance
    seed: int
    mean_interval_s: float = 25.0
    injected: list[Fault] = field(default_factory=list)
    # Faults drawn that could not be made, with the reason (kind, at, why).
    not_fired: list[Fault] = field(default_factory=list)
    killed_runs: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.stripe = self.deployment.services.apis.stripe
        self.deck: list[str] = [KILL_RUN_WORKER]
        self.worker_pids: dict[str, int] = {}
        self.stopping = threading.Event()
        self.broker_lock = threading.Lock()
        self.broker_is_down = False

    def counts(self) -> dict[str, int]:
        return dict(Counter(fault.kind for fault in self.injected))

    def not_fired_counts(self) -> dict[str, int]:
        return dict(Counter(fault.kind for fault in self.not_fired))

    def draw(self) -> str:
        if not self.deck:
            self.deal()
        return self.deck.pop(0)

    def deal(self) -> None:
        self.deck = list(FAULTS)
        self.rng.shuffle(self.deck)

    def kill_again_after_next(self) -> None:
        """Until one has cut a write, the kill comes back as the fault after next. The deck is dealt first
        when empty: the kill put in an empty deck came back as the very next fault, so on a loaded machine
        (no run executing yet) a run's first minutes went by in kill searches (seeds 13 and 14 fired 0.5
        and 0.75 faults a minute)."""
        if not self.deck:
            self.deal()
        self.deck.insert(1, KILL_RUN_WORKER)

    def run(self, stop: threading.Event) -> None:
        """Inject faults until `stop`: waits drawn from an exponential, never longer than 60 s."""
        self.stopping = stop
        longest_wait = 55.0
        while not stop.is_set():
            wait = min(self.rng.expovariate(1 / self.mean_interval_s), longest_wait)
            if stop.wait(wait):
                return
            kind = self.draw()
            try:
                detail = self.inject(kind)
            except Exception as failure:
                self.errors.append(f"{kind}: {type(failure).__name__}: {failure}")
                self.not_fired.append(Fault(kind, time.time(), f"{type(failure).__name__}: {failure}"))
                continue
            if isinstance(detail, NotFired):
                self.not_fired.append(Fault(kind, time.time(), detail.reason))
                longest_wait = AFTER_NOT_FIRED_S
            else:
                self.injected.append(Fault(detail.kind or kind, time.time(), detail.detail))
                longest_wait = 55.0
            if kind == KILL_RUN_WORKER and KILL_RUN_WORKER not in self.counts():
                self.kill_again_after_next()
        self.calm_gateway()
        self.broker_up()

    def inject(self, kind: str) -> Fired | NotFired:
        actions: dict[str, Callable[[], str | Fired | NotFired]] = {
            KILL_RUN_WORKER: self.kill_run_worker,
            RESTART_POSTGRES: self.restart_postgres,
            KILL_REDIS_CONNECTIONS: self.kill_redis_connections,
            RESTART_REDIS: self.restart_redis,
            RESTART_DAEMON: self.restart_daemon,
            GATEWAY_5XX_BEFORE: lambda: self.queue_gateway_faults(stripe_server.ERROR),
            GATEWAY_5XX_AFTER: lambda: self.queue_gateway_faults(stripe_server.ERROR_AFTER_CHARGE),
            GATEWAY_TIMEOUT_AFTER_CHARGE: lambda: self.queue_gateway_faults(stripe_server.STALL),
            GATEWAY_SLOW: self.slow_gateway,
            BROKER_OUTAGE: self.broker_outage,
        }
        outcome = actions[kind]()
        return Fired(outcome) if isinstance(outcome, str) else outcome

    def run_workers(self) -> dict[int, dg.DagsterRun]:
        """The process of every run executing now, by pid."""
        workers: dict[int, dg.DagsterRun] = {}
        for run in self.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            pid = self.worker_pids.get(run.run_id) or worker_pid(self.instance, run.run_id)
            if pid is not None:
                self.worker_pids[run.run_id] = pid
                workers[pid] = run
        return workers

    def kill_before_the_drain(self) -> None:
        """When no mid-write kill fired during the load (on a loaded machine runs may barely have begun
        executing), one more try while the queued runs execute at the start of the drain."""
        if KILL_RUN_WORKER in self.counts():
            return
        self.stopping = threading.Event()
        outcome = self.kill_run_worker(LAST_KILL_SEARCH_S)
        if isinstance(outcome, NotFired):
            self.not_fired.append(Fault(KILL_RUN_WORKER, time.time(), f"before the drain: {outcome.reason}"))
        else:
            self.injected.append(Fault(outcome.kind or KILL_RUN_WORKER, time.time(), outcome.detail))

    def kill_run_worker(self, search_s: float = WRITE_SEARCH_S) -> Fired | NotFired:
        """SIGKILL the process of a run while its PostgreSQL transaction holds uncommitted writes."""
        engine = sa.create_engine(self.deployment.services.postgres.server.url, pool_pre_ping=True)
        try:
            return self._kill_inside_a_write(engine, search_s)
        finally:
            engine.dispose()

    def _kill_inside_a_write(self, engine: sa.Engine, search_s: float) -> Fired | NotFired:
        deadline = time.monotonic() + search_s
        workers: dict[int, dg.DagsterRun] = {}
        owners: dict[int, int] = {}
        workers_seen_at = 0.0
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                if time.monotonic() - workers_seen_at > 1.0:
                    # A worker's pooled connections last; their ports are looked up once a second, so
                    # the kill follows the sighting of a write within milliseconds.
                    workers, workers_seen_at = self.run_workers(), time.monotonic()
                    owners = writes.port_owners(set(workers))
                if not workers:
                    time.sleep(WRITE_POLL_S)
                    continue
                with engine.connect() as connection:
                    in_flight = writes.open_writes(connection)
            except sa.exc.SQLAlchemyError:
                # PostgreSQL restarting: look again.
                time.sleep(WRITE_POLL_S)
                continue
            for write in in_flight:
                pid = owners.get(write.client_port)
                # Only a client between statements of its open transaction: an active statement of an
                # autocommit transaction runs to its commit even when its client is gone.
                if pid is None or write.state != writes.IDLE_IN_TRANSACTION:
                    continue
                if not self._stopped_inside(engine, pid, write):
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                run = workers[pid]
                self.killed_runs.add(run.run_id)
                fate = self._fate_of(engine, write)
                kind = KILL_RUN_WORKER if fate == "aborted" else f"{KILL_RUN_WORKER} (write {fate} first)"
                return Fired(
                    f"run {run.run_id} ({run.job_name}) pid {pid} in transaction {write.xid} "
                    f"({write.state}: {write.query[:100]!r}): {fate}",
                    kind,
                )
            time.sleep(WRITE_POLL_S)
        if self.stopping.is_set():
            return NotFired("the load ended before a run worker was seen inside a PostgreSQL write")
        return NotFired(
            f"no run worker inside a PostgreSQL write within {search_s:.0f} s "
            f"({len(workers)} runs executing at the end)"
        )

    @staticmethod
    def _stopped_inside(engine: sa.Engine, pid: int, write: writes.OpenWrite) -> bool:
        """Stop the worker (SIGSTOP) and keep it stopped if its transaction is still open between
        statements, so the SIGKILL that follows cuts the write. Seen between its last statement and its
        COMMIT, a worker killed at once had mostly committed first: in one cut all four kills did.
        A worker that had sent its COMMIT already goes on (SIGCONT)."""
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False
        inside = False
        try:
            with engine.connect() as connection:
                inside = writes.still_between_statements(connection, write)
        except sa.exc.SQLAlchemyError:
            inside = False
        finally:
            if not inside:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return inside

    def _fate_of(self, engine: sa.Engine, write: writes.OpenWrite) -> str:
        with engine.connect() as connection:
            return writes.fate_once_gone(connection, write, BACKEND_GONE_S)

    def restart_postgres(self) -> str:
        self.deployment.services.postgres.restart()
        return "immediate stop and start"

    def kill_redis_connections(self) -> str:
        killed = self.deployment.services.redis.kill_client_connections()
        return f"{killed} connections"

    def restart_redis(self) -> str:
        self.deployment.services.redis.restart()
        return "SIGTERM and start on the same port (AOF kept)"

    def restart_daemon(self) -> str:
        self.deployment.restart_daemon()
        return "SIGKILL of the daemon's process group, a new daemon"

    def queue_gateway_faults(self, fault: str) -> str:
        count = self.rng.randint(1, 4)
        if fault == stripe_server.STALL:
            # Longer than the gateway's call timeout: the client gives up not knowing the charge was made.
            self.stripe.faults.stall_s = 5.0
        self.stripe.fail_next(*[fault] * count)
        return f"next {count} requests"

    def slow_gateway(self) -> str:
        latency = self.rng.uniform(0.5, 2.5)
        self.stripe.faults.latency_s = latency
        timer = threading.Timer(self.rng.uniform(5, 20), self.calm_gateway)
        timer.daemon = True
        timer.start()
        return f"{latency:.1f} s per request for a while"

    def broker_outage(self) -> str | NotFired:
        seconds = self.rng.uniform(5, 20)
        with self.broker_lock:
            if self.broker_is_down:
                return NotFired("the broker is already down")
            self.deployment.services.kafka.set_down()
            self.broker_is_down = True
        timer = threading.Timer(seconds, self.broker_up)
        timer.daemon = True
        timer.start()
        return f"broker 1 down for {seconds:.0f} s"

    def broker_up(self) -> None:
        with self.broker_lock:
            if self.broker_is_down:
                self.deployment.services.kafka.set_up()
                self.broker_is_down = False

    def calm_gateway(self) -> None:
        self.stripe.faults.latency_s = 0.0
        self.stripe.fail_next()
