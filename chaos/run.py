"""One chaos run: deploy, load, injure, drain, check, report."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from chaos import checker
from chaos.confirmations import confirmations_due
from chaos.deployment import FLASH_SALE_PRODUCT, SIGNING_SECRET, Deployment, bootstrap
from chaos.nemesis import Nemesis
from chaos.report import Report, build_report
from chaos.services import Services, running_services
from chaos.workload import Rates, Workload
from hub_pipelines import settings
from hub_pipelines.orders.tables import FAILED, PAID, orders, products
from tests.services import wait_until

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
UNFINISHED = set(dg.DagsterRunStatus) - FINISHED
FINAL_UPLOAD_STATUSES = {"published", "quarantined", "rejected"}
# How often a drain that goes on says what it still waits for.
DRAIN_LOG_INTERVAL_S = 30.0


@dataclass(frozen=True)
class ChaosSettings:
    minutes: float
    seed: int
    rates: Rates = field(default_factory=Rates)
    nemesis: bool = True
    # The drain gives up when nothing moved for this long (twice this in all).
    drain_timeout_s: float = 900.0
    report_path: Path | None = None
    keep_folder: bool = False


@dataclass
class Observations:
    """What the harness saw while the run went on, beside what the stores hold after."""

    errors: list[str] = field(default_factory=list)
    stock_samples: int = 0
    negative_stock: list[str] = field(default_factory=list)

    def error(self, source: str, failure: BaseException) -> None:
        self.errors.append(f"{time.strftime('%H:%M:%S')} {source}: {type(failure).__name__}: {failure}"[:500])


def sample_stock(database_url: str, stop: threading.Event, seen: Observations) -> None:
    """Stock is never negative, sampled while the run goes on (PostgreSQL may be restarting)."""
    engine = sa.create_engine(database_url, pool_pre_ping=True)
    try:
        while not stop.wait(1.0):
            try:
                with engine.connect() as connection:
                    negative = connection.execute(
                        sa.select(products.c.product_id, products.c.stock).where(products.c.stock < 0)
                    ).all()
            except sa.exc.SQLAlchemyError:
                continue
            seen.stock_samples += 1
            seen.negative_stock += [f"{time.strftime('%H:%M:%S')} {p}={s}" for p, s in negative]
    finally:
        engine.dispose()


def still_moving(
    instance: dg.DagsterInstance,
    services: Services,
    produced_uploads: set[str],
    ends: dict[str, dict[int, int]],
) -> tuple[list[str], tuple[Any, ...]]:
    """What the system is still doing (empty when drained: no run queued, starting or executing, both
    topic cursors at the topic ends with no run pending, every order and upload final), and a
    fingerprint of its state that changes whenever something moved."""
    moving: list[str] = []
    found = checker.Findings()
    checker.check_dagster_cursors(instance, ends, found)
    moving += [anomaly.detail for anomaly in found.anomalies]
    now = time.time()
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=list(UNFINISHED)), limit=500)
    for record in records:
        run = record.dagster_run
        since = record.start_time or record.create_timestamp.timestamp()
        partition = run.tags.get("dagster/partition")
        moving.append(
            f"{run.job_name} run {run.run_id[:8]}{f' partition {partition}' if partition else ''} "
            f"{run.status.value} ({now - since:.0f} s since {'start' if record.start_time else 'creation'}"
            f"{', ' + last_engine_event(instance, run.run_id) if run.status != dg.DagsterRunStatus.STARTED else ''})"
        )
    engine = sa.create_engine(services.postgres.server.url)
    try:
        with engine.connect() as connection:
            open_orders = connection.execute(
                sa.select(sa.func.count()).select_from(orders).where(orders.c.status.not_in([PAID, FAILED]))
            ).scalar_one()
            unconfirmed = confirmations_due(connection)
            statuses: dict[str, str] = {
                key: status
                for key, status in connection.execute(sa.text("SELECT object_key, status FROM media_uploads"))
            }
    finally:
        engine.dispose()
    if open_orders:
        moving.append(f"{open_orders} orders not final")
    if unconfirmed:
        moving.append(f"{unconfirmed} confirmations of PAID orders not sent yet")
    waiting = sorted(key for key in produced_uploads if statuses.get(key) not in FINAL_UPLOAD_STATUSES)
    if waiting:
        moving.append(f"{len(waiting)} uploads not final: {', '.join(waiting[:5])}")
    finished = instance.get_runs_count(filters=dg.RunsFilter(statuses=list(FINISHED)))
    fingerprint = (
        tuple(sorted((r.dagster_run.run_id, r.dagster_run.status.value) for r in records)),
        tuple(found.anomalies),
        finished,
        open_orders,
        unconfirmed,
        len(waiting),
    )
    return moving, fingerprint


def last_engine_event(instance: dg.DagsterInstance, run_id: str) -> str:
    """The last word Dagster logged about a run that has not begun executing (why it waits)."""
    entries = instance.all_logs(run_id)
    return f"last event: {entries[-1].message[:160]!r}" if entries else "no event yet"


def drain(
    instance: dg.DagsterInstance,
    services: Services,
    produced_uploads: set[str],
    ends: dict[str, dict[int, int]],
    stall_timeout_s: float,
    seen: Observations,
    log: Any = print,
) -> tuple[list[str], str]:
    """Waits until nothing is moving. Gives up when nothing changed for `stall_timeout_s` (longer than the
    run monitor's start timeout, so a run stuck starting is failed and retried first), or after twice
    that in all. Returns what was still moving (empty when drained) and why the wait ended."""
    began = last_change = last_logged = time.monotonic()
    previous: tuple[Any, ...] | None = None
    moving = ["not looked yet"]
    while True:
        try:
            moving, fingerprint = still_moving(instance, services, produced_uploads, ends)
        except Exception as failure:
            seen.error("drain", failure)
            moving, fingerprint = [f"could not look: {failure}"], ("error",)
        if not moving:
            return [], "drained"
        now = time.monotonic()
        if fingerprint != previous:
            previous, last_change = fingerprint, now
        if now - last_change >= stall_timeout_s:
            return moving, f"nothing moved for {now - last_change:.0f} s"
        if now - began >= 2 * stall_timeout_s:
            return moving, f"still moving after {now - began:.0f} s"
        if now - last_logged >= DRAIN_LOG_INTERVAL_S:
            # Whoever watches a long drain sees what it waits for.
            log(f"chaos: draining for {now - began:.0f} s: {'; '.join(moving[:10])}")
            last_logged = now
        time.sleep(3)


@contextlib.contextmanager
def chaos_folder(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hub-chaos-"))
    # PostgreSQL runs as `postgres` under a root harness and must reach its folder.
    root.chmod(0o755)
    try:
        yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def run_chaos(config: ChaosSettings, log: Any = print) -> Report:
    with chaos_folder(config.keep_folder) as root, running_services(root, config.seed) as services:
        log(f"chaos: seed {config.seed}, {config.minutes} min, folder {root}")
        deployment = Deployment(root, services)
        deployment.prepare()
        bootstrap(deployment, config.rates.flash_sale_stock)
        processes_started = time.time()
        deployment.start()
        for name in (
            "DAGSTER_HOME",
            "DAGSTER_PG_USERNAME",
            "DAGSTER_PG_PASSWORD",
            "DAGSTER_PG_HOST",
            "DAGSTER_PG_DB",
            "DAGSTER_PG_PORT",
        ):
            os.environ[name] = deployment.environment[name]
        log(f"chaos: deployment up, UI at http://127.0.0.1:{deployment.webserver_port}")
        try:
            return _load_injure_check(config, deployment, log, processes_started)
        finally:
            deployment.stop()


# The sensors that take the workload's input in.
INPUT_SENSORS = (*checker.TOPIC_SENSORS, "media_uploads_sensor")


def wait_until_serving(instance: dg.DagsterInstance, since: float, timeout_s: float = 600) -> float:
    """Until the daemon has evaluated every input sensor once since `since`, as a readiness probe gates
    traffic to a new deployment; the seconds from `since`. The latency figures then measure a serving
    deployment, not its processes' start (which the report prints apart as `ready_s`)."""

    def ticked() -> bool:
        last = {
            state.instigator_name: getattr(state.instigator_data, "last_tick_timestamp", None) or 0.0
            for state in instance.all_instigator_state()
            if state.instigator_name in INPUT_SENSORS
        }
        return all(last.get(name, 0.0) >= since for name in INPUT_SENSORS)

    wait_until(ticked, "every input sensor's first tick", timeout=timeout_s)
    return time.time() - since


def _load_injure_check(
    config: ChaosSettings, deployment: Deployment, log: Any, processes_started: float
) -> Report:
    services = deployment.services
    seen = Observations()
    workload = Workload(
        config.seed,
        config.rates,
        services.kafka.bootstrap_servers,
        services.s3,
        SIGNING_SECRET,
        FLASH_SALE_PRODUCT,
    )
    load_load = os.getloadavg()
    with dg.DagsterInstance.from_config(str(deployment.dagster_home)) as instance:
        ready_s = wait_until_serving(instance, processes_started)
        log(f"chaos: serving {ready_s:.0f} s after the deployment's processes started; load begins")
        nemesis = Nemesis(deployment, instance, config.seed)
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=workload.run, args=(stop, config.minutes * 60, seen.error), name="workload"
            ),
            threading.Thread(
                target=sample_stock,
                args=(services.postgres.server.url, stop, seen),
                name="stock",
                daemon=True,
            ),
        ]
        if config.nemesis:
            threads.append(threading.Thread(target=nemesis.run, args=(stop,), name="nemesis", daemon=True))
        supervisor_stop = threading.Event()
        supervisor = threading.Thread(
            target=deployment.supervise, args=(supervisor_stop,), name="supervisor", daemon=True
        )
        supervisor.start()
        started = time.time()
        for thread in threads:
            thread.start()
        threads[0].join()
        stop.set()
        for thread in threads[1:]:
            # A fault that is still being injected (a restart) ends within its own timeouts.
            thread.join(timeout=300)
            if thread.is_alive():
                seen.errors.append(f"the {thread.name} thread did not stop within 300 s")
        load_ended = time.time()
        log(f"chaos: load and nemesis stopped after {load_ended - started:.0f} s; draining")
        faults_during_load = len(nemesis.injected)
        if config.nemesis:
            nemesis.kill_before_the_drain()
        ends = {topic: workload.topics.end_offsets(topic) for topic in checker.TOPIC_SENSORS.values()}
        uploads = {upload.key for upload in workload.produced.uploads}
        moving, drain_ended = drain(instance, services, uploads, ends, config.drain_timeout_s, seen, log)
        drained_at = time.time()
        log(
            f"chaos: drained in {drained_at - load_ended:.0f} s"
            if not moving
            else f"chaos: not drained ({drain_ended}): {'; '.join(moving[:10])}"
        )
        workload.close()
        supervisor_stop.set()
        supervisor.join(timeout=300)
        deployment.stop()
        found = checker.check_everything(
            deployment, instance, workload.produced, nemesis.injected, nemesis.killed_runs, ends
        )
    if moving:
        found.add("system did not drain", f"{drain_ended}: {'; '.join(moving[:10])}", still_moving=moving)
    if seen.negative_stock:
        found.add("stock went negative during the run", "; ".join(seen.negative_stock[:20]))
    report = build_report(
        config_summary={
            "seed": config.seed,
            "minutes": config.minutes,
            "rates": config.rates.__dict__,
            "nemesis": config.nemesis,
        },
        produced=workload.produced,
        nemesis=nemesis,
        found=found,
        seen_errors=seen.errors,
        stock_samples=seen.stock_samples,
        timings={"ready_s": ready_s, "load_s": load_ended - started, "drain_s": drained_at - load_ended},
        restarts=deployment.supervisor_restarts,
        load_average={"before": load_load, "after": os.getloadavg()},
        faults_during_load=faults_during_load,
    )
    return report


def settings_from_environment(argv: list[str] | None = None) -> ChaosSettings:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("CHAOS_MINUTES", "10")))
    parser.add_argument(
        "--seed", type=int, default=int(os.environ.get("CHAOS_SEED") or random.randrange(1, 10**6))
    )
    parser.add_argument(
        "--orders-per-s", type=float, default=float(os.environ.get("CHAOS_ORDERS_PER_S", "3"))
    )
    parser.add_argument(
        "--events-per-s", type=float, default=float(os.environ.get("CHAOS_EVENTS_PER_S", "40"))
    )
    parser.add_argument(
        "--uploads-per-min", type=float, default=float(os.environ.get("CHAOS_UPLOADS_PER_MIN", "4"))
    )
    parser.add_argument(
        "--no-nemesis", action="store_true", default=os.environ.get("CHAOS_NEMESIS", "on") == "off"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path(os.environ.get("CHAOS_REPORT", str(settings.PROJECT_ROOT / ".hub" / "chaos"))),
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's folder (logs, data) for inspection"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=float(os.environ.get("CHAOS_DRAIN_TIMEOUT_S", "900")),
        help="give up draining when nothing moved for this many seconds (twice this in all)",
    )
    args = parser.parse_args(argv)
    return ChaosSettings(
        minutes=args.minutes,
        seed=args.seed,
        rates=Rates(
            orders_per_s=args.orders_per_s,
            events_per_s=args.events_per_s,
            uploads_per_min=args.uploads_per_min,
        ),
        nemesis=not args.no_nemesis,
        report_path=args.report,
        keep_folder=args.keep,
        drain_timeout_s=args.drain_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    config = settings_from_environment(argv)
    # The workload's Kafka clients log each failed reconnect while the nemesis holds the broker down
    # (thousands of lines a window); the outage is counted in the report, and a message the broker did
    # not take reaches the workload as the exception `produce` raises.
    logging.getLogger("hub_pipelines.resources.kafka_cluster").setLevel(logging.CRITICAL)
    report = run_chaos(config)
    text = report.render()
    print(text)
    if config.report_path is not None:
        config.report_path.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = config.report_path / f"chaos-{stamp}-seed{config.seed}.json"
        path.write_text(json.dumps(report.as_json(), indent=2, default=str))
        print(f"report: {path}")
    return 0 if not report.anomalies else 1


if __name__ == "__main__":
    sys.exit(main())
