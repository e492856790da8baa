"""The nemesis: faults at random moments drawn from the run's seed, at least one a minute.

A run worker is killed with SIGKILL while its run is executing its steps (after a step started,
after a random delay, so in the middle of its reads and writes); PostgreSQL is stopped in immediate
mode and started again; Redis loses its client connections (CLIENT KILL) or is restarted; the daemon
is killed and started again; the Stripe-protocol server answers 5xx before execution or after it,
holds the connection after charging until the client times out, or answers slowly.
"""

from __future__ import annotations

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
FAULTS = (
    KILL_RUN_WORKER, RESTART_POSTGRES, KILL_REDIS_CONNECTIONS, RESTART_REDIS, RESTART_DAEMON,
    GATEWAY_5XX_BEFORE, GATEWAY_5XX_AFTER, GATEWAY_TIMEOUT_AFTER_CHARGE, GATEWAY_SLOW,
)  # fmt: skip
WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")
STARTED = {dg.DagsterRunStatus.STARTED}


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    detail: str


@dataclass
class Nemesis:
    deployment: Deployment
    instance: dg.DagsterInstance
    seed: int
    mean_interval_s: float = 25.0
    injected: list[Fault] = field(default_factory=list)
    killed_runs: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.stripe = self.deployment.services.apis.stripe

    def counts(self) -> dict[str, int]:
        return dict(Counter(fault.kind for fault in self.injected))

    def run(self, stop: threading.Event) -> None:
        """Inject faults until `stop`: waits drawn from an exponential, never longer than 60 s."""
        while not stop.is_set():
            wait = min(self.rng.expovariate(1 / self.mean_interval_s), 55.0)
            if stop.wait(wait):
                return
            kind = self.rng.choice(FAULTS)
            try:
                detail = self.inject(kind)
            except Exception as failure:
                self.errors.append(f"{kind}: {type(failure).__name__}: {failure}")
                continue
            if detail is not None:
                self.injected.append(Fault(kind, time.time(), detail))
        self.calm_gateway()

    def inject(self, kind: str) -> str | None:
        actions: dict[str, Callable[[], str | None]] = {
            KILL_RUN_WORKER: self.kill_run_worker,
            RESTART_POSTGRES: self.restart_postgres,
            KILL_REDIS_CONNECTIONS: self.kill_redis_connections,
            RESTART_REDIS: self.restart_redis,
            RESTART_DAEMON: self.restart_daemon,
            GATEWAY_5XX_BEFORE: lambda: self.queue_gateway_faults(stripe_server.ERROR),
            GATEWAY_5XX_AFTER: lambda: self.queue_gateway_faults(stripe_server.ERROR_AFTER_CHARGE),
            GATEWAY_TIMEOUT_AFTER_CHARGE: lambda: self.queue_gateway_faults(stripe_server.STALL),
            GATEWAY_SLOW: self.slow_gateway,
        }
        return actions[kind]()

    def worker_pid(self, run_id: str) -> int | None:
        for entry in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            found = WORKER_PID.search(entry.user_message or "")
            if found:
                return int(found.group(1))
        return None

    def kill_run_worker(self) -> str | None:
        """SIGKILL a run's process some time after one of its steps started: mid-read or mid-write."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = self.instance.get_runs(filters=dg.RunsFilter(statuses=list(STARTED)))
            candidates = [
                run
                for run in runs
                if self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            ]
            if candidates:
                run = self.rng.choice(candidates)
                pid = self.worker_pid(run.run_id)
                if pid is None:
                    return None
                time.sleep(self.rng.uniform(0.0, 2.0))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    return None
                self.killed_runs.add(run.run_id)
                return f"run {run.run_id} ({run.job_name}) pid {pid}"
            time.sleep(0.5)
        return None

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

    def calm_gateway(self) -> None:
        self.stripe.faults.latency_s = 0.0
        self.stripe.fail_next()
