"""Order ledger throughput on PostgreSQL, beside pgbench's TPC-B on the same server in the same run.

    uv run python bench/orders.py [--orders 2000] [--min-in-flight 2] [--max-in-flight 256]
                                  [--workers N (a fixed N in flight)] [--reserve-concurrency 8]
                                  [--lanes 1,2,4] [--gateway-ms 0,50,300] [--database-url postgresql://...]
                                  [--profile DIR (cProfile of every ledger thread, one file per scenario and lane)]

Each scenario lands `--orders` signed events (1-3 distinct lines each, products drawn Zipf-skewed
from a 1,000-product catalog) in the SQL inbox, then times `OrderBatchProcessor.process_batch`:
authenticity, validation, cached catalog, the SERIALIZABLE reserve transaction, the Stripe SDK call
to the fake Stripe server (another process, at 0 ms and 50 ms added latency), and the PAID
transaction. The events go to 4 inbox partitions; with N lanes, N processes run one ledger each over
its lane's partitions (partition p in lane p % N, `hub_pipelines/landing/lanes.py`), as the N lanes'
runs would, each in its own pod. One scenario per lane count and gateway latency.

It prints orders/s, per-order p50/p95/p99, serialization and payment retries, the speed-up of each lane count over one lane, the in-flight limit the ledger ended at (and its
peak), and the CPU per order of the ledger, of the fake Stripe
server and of PostgreSQL (all three share the machine's cores, so their sum bounds orders/s), and the
CPU of the imports of the ledger's first charge, paid once per lane process before its clock starts
and not counted per order (`FIRST_CHARGE_IMPORTS`), then
pgbench TPC-B tps (scale 10, 8 clients) and the ceilings: the ledger's own SQL run by pgbench's C
client on the real schema, order by order (`RESERVE_ORDER` at SERIALIZABLE, then `RECORD_PAID`), and
in groups of 16 as the ledger now sends it, one group at a time (`reserve_orders`, then one
`RECORD_PAID` for the group),
which no implementation of that SQL on this server can beat. Without `--database-url` a throwaway cluster is
started with Debian's binaries (as user postgres) and default durability settings.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import multiprocessing
import os
import pstats
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import sqlalchemy as sa  # noqa: E402
from orders_pgbench import (  # noqa: E402
    GROUP_CLIENTS,
    PRODUCTS,
    ZIPF_EXPONENT,
    ceiling_tps,
    free_port,
    fresh_database,
    pgbench_tps,
    skewed_products,
    throwaway_postgres,
)

from hub_pipelines.core.schema import upgrade_schema  # noqa: E402
from hub_pipelines.orders.catalog import Catalog, add_missing_products  # noqa: E402
from hub_pipelines.orders.metrics import percentile  # noqa: E402
from hub_pipelines.orders.pii import PiiCipher, new_key_setting  # noqa: E402
from hub_pipelines.orders.processing import OrderBatchProcessor  # noqa: E402
from hub_pipelines.resources.orders.payment_gateway import StripeGateway  # noqa: E402
from hub_pipelines.resources.sql_database import PostgresDatabase  # noqa: E402
from tests.orders.support import HMAC_SECRET, Inbox, authenticator, order_event  # noqa: E402

PARTITIONS = 4
FIRST_CHARGE_IMPORTS = (
    "stripe",
    "stripe._stripe_client",
    "hub_pipelines.core.breaker",
    "hub_pipelines.resources.orders.stripe_transport",
)
"""What the ledger imports at its first charge (the Stripe SDK with httpx and requests, and its
StripeClient, which the SDK loads only when first named: ~4% of a 3,000-order batch's CPU; pybreaker
with redis): about a second of CPU that a run process pays once, whatever its batch's size. Each lane's
process loads them before the clock starts and reports their CPU apart, so that `cpu ms/order` is the
cost of an order, not a share of the imports that shrinks as the scenario grows."""


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of a process (with its waited-for children's, if asked), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(admin_url: str) -> float | None:
    """CPU of the whole local server so far: the postmaster, its live processes and the backends it
    reaped; None when the server is not on this machine."""
    engine = sa.create_engine(sa.make_url(admin_url).set(drivername="postgresql+psycopg"))
    with engine.connect() as connection:
        data = connection.execute(sa.text("SHOW data_directory")).scalar_one()
    engine.dispose()
    try:
        postmaster = int((Path(data) / "postmaster.pid").read_text().split()[0])
    except OSError:
        return None
    total = cpu_seconds(postmaster, reaped_children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                total += cpu_seconds(int(stat.parent.name))
    return total


@contextlib.contextmanager
def fake_stripe(latency_s: float) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.stripe_server", str(port), str(latency_s)],
                               cwd=PROJECT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_scenario(
    admin_url: str,
    latency_s: float,
    orders: int,
    in_flight: tuple[int, int],
    lanes: int,
    reserve_concurrency: int,
    profile_dir: str | None = None,
) -> dict[str, float]:
    url = fresh_database(admin_url, f"bench_orders_{lanes}lanes_{int(latency_s * 1000)}ms")
    database = PostgresDatabase(url=url, pool_size=reserve_concurrency + 4, max_overflow=8)
    upgrade_schema(database.engine)
    rng = random.Random(42)
    add_missing_products(
        database, [(f"p-{n}", f"Product {n}", "USD", 100 + n, 1_000_000) for n in range(PRODUCTS)]
    )
    events: list[list[dict[str, object]]] = [[] for _ in range(PARTITIONS)]
    for n in range(orders):
        items = [
            (f"p-{p}", rng.randint(1, 3), f"{(100 + p) / 100:.2f}")
            for p in skewed_products(rng, rng.randint(1, 3))
        ]
        events[n % PARTITIONS].append(order_event(customer=f"c-{n % 5000}", items=items))
    for partition, share in enumerate(events):
        Inbox(database, partition=partition).land_events(share)
    database.dispose()
    pii_keys = new_key_setting()
    postgres_cpu = postgres_cpu_seconds(admin_url)
    with fake_stripe(latency_s) as (base_url, stripe_pid):
        stripe_cpu = cpu_seconds(stripe_pid)
        profile = (
            str(Path(profile_dir) / f"ledger_{lanes}lanes_{int(latency_s * 1000)}ms") if profile_dir else None
        )
        settings = (url, base_url, pii_keys, in_flight, reserve_concurrency, lanes, profile)
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(lanes, mp_context=context) as pool:
            start = manager.Barrier(lanes)
            results = list(pool.map(run_ledger, [settings] * lanes, range(lanes), [start] * lanes))
        elapsed = max(result["ended"] for result in results) - min(result["started"] for result in results)
        stripe_cpu = cpu_seconds(stripe_pid) - stripe_cpu
    postgres_after = postgres_cpu_seconds(admin_url)
    paid = sum(result["paid"] for result in results)
    assert paid == orders, f"only {paid} of {orders} orders were paid: {results}"
    seconds = [second for result in results for second in result["order_seconds"]]
    return {
        "orders_per_s": paid / elapsed,
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "cache_hit_rate": sum(result["cache_hit_rate"] for result in results) / lanes,
        "in_flight_limit": max(result["in_flight_limit"] for result in results),
        "in_flight_limit_peak": max(result["in_flight_limit_peak"] for result in results),
        "serialization_retries": sum(result["serialization_retries"] for result in results),
        "payment_retries": sum(result["payment_retries"] for result in results),
        "cpu_ms_per_order": sum(result["cpu_s"] for result in results) / orders * 1000,
        "imports_cpu_s": max(result["imports_cpu_s"] for result in results),
        "stripe_cpu_ms_per_order": stripe_cpu / orders * 1000,
        "postgres_cpu_ms_per_order": (
            (postgres_after - postgres_cpu) / orders * 1000
            if postgres_cpu is not None and postgres_after is not None
            else float("nan")
        ),
    }


def run_ledger(
    settings: tuple[str, str, str, tuple[int, int], int, int, str | None], lane: int, start: Any
) -> dict[str, Any]:
    """One lane's run of the ledger, in a process of its own; the clock starts when every lane's
    process is ready (`start` is a shared barrier). With a profile path, every thread of the batch is
    profiled (cProfile, which slows the process: read the shares, not the rates)."""
    url, base_url, pii_keys, (min_in_flight, max_in_flight), reserve_concurrency, lanes, profile = settings
    database = PostgresDatabase(url=url, pool_size=reserve_concurrency + 4, max_overflow=8)
    gateway = StripeGateway(
        api_key="sk_test_bench",
        api_base=base_url,
        breaker_name=f"bench-{uuid.uuid4()}",
        max_connections=min(max_in_flight, 128),
    )
    ledger = OrderBatchProcessor(
        database,
        Catalog(database),
        gateway,
        authenticator(hmac_secret=HMAC_SECRET),
        cipher=PiiCipher.from_setting(pii_keys),
        lane=lane,
        lanes=lanes,
        min_in_flight=min_in_flight,
        max_in_flight=max_in_flight,
        reserve_concurrency=reserve_concurrency,
    )
    imports_cpu = time.process_time()
    for module in FIRST_CHARGE_IMPORTS:
        importlib.import_module(module)
    imports_cpu = time.process_time() - imports_cpu
    start.wait()
    started, cpu = time.time(), time.process_time()
    with profiled_threads(f"{profile}_lane{lane}.pstats" if profile else None):
        report = ledger.process_batch(1_000_000)
    ended, cpu_s = time.time(), time.process_time() - cpu
    database.dispose()
    return {
        "paid": report.count("paid"),
        "order_seconds": list(report.order_seconds),
        "cache_hit_rate": report.cache.hit_rate,
        "in_flight_limit": report.in_flight_limit,
        "in_flight_limit_peak": report.in_flight_limit_peak,
        "serialization_retries": report.serialization_retries,
        "payment_retries": report.payment_retries,
        "cpu_s": cpu_s,
        "imports_cpu_s": imports_cpu,
        "started": started,
        "ended": ended,
    }


@contextlib.contextmanager
def profiled_threads(path: str | None) -> Iterator[None]:
    """cProfile every thread that runs meanwhile (this one and those it starts), merged into `path`;
    each thread's CPU time (time.thread_time), so waits on locks, sockets and the GIL count nothing."""
    if path is None:
        yield
        return
    profiles = [cProfile.Profile(time.thread_time)]

    def profile_new_thread(*_: object) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()

    threading.setprofile(profile_new_thread)
    profiles[0].enable()
    try:
        yield
    finally:
        profiles[0].disable()
        threading.setprofile(None)
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--min-in-flight", type=int, default=2, help="OrderLedgerSettings.min_in_flight")
    parser.add_argument("--max-in-flight", type=int, default=256, help="OrderLedgerSettings.max_in_flight")
    parser.add_argument(
        "--workers", type=int, help="a fixed number in flight (min = max), as before the limiter"
    )
    parser.add_argument("--reserve-concurrency", type=int, default=8, help="reserve transactions at once")
    parser.add_argument(
        "--lanes", default="1,2,4", help="lane counts, one scenario each (a process per lane)"
    )
    parser.add_argument("--database-url", help="an existing server (superuser) instead of a throwaway one")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument(
        "--profile", help="a directory: cProfile every ledger thread, one .pstats file per scenario and lane"
    )
    parser.add_argument(
        "--gateway-ms",
        default="0,50,300",
        help="added latencies of the fake Stripe, one scenario each (Stripe: ~300)",
    )
    options = parser.parse_args()
    in_flight = (
        (options.workers, options.workers)
        if options.workers
        else (options.min_in_flight, options.max_in_flight)
    )
    lane_counts = [int(n) for n in options.lanes.split(",")]
    latencies = [float(ms) / 1000 for ms in options.gateway_ms.split(",")]
    server = contextlib.nullcontext(options.database_url) if options.database_url else throwaway_postgres()
    with server as admin_url:
        print(
            f"order ledger: {options.orders} orders per scenario over {PARTITIONS} partitions, one process "
            f"per lane x {in_flight[0]}..{in_flight[1]} orders in flight, {options.reserve_concurrency} "
            f"reserving at once per lane, 1-3 lines each over {PRODUCTS} products (Zipf {ZIPF_EXPONENT}); "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'lanes':>5} {'gateway':>8} {'orders/s':>9} {'x 1 lane':>9} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'p99 ms':>8} {'hit rate':>9} {'retries':>8} {'pay retries':>11} {'limit':>6} {'peak':>5} {'cpu ms/order':>13} "
            f"{'stripe fake':>12} {'postgres':>9} {'imports s':>10}"
        )
        tps: dict[tuple[int, float], float] = {}
        spent: dict[tuple[int, float], float] = {}
        for latency in latencies:
            for lanes in lane_counts:
                result = run_scenario(
                    admin_url,
                    latency,
                    options.orders,
                    in_flight,
                    lanes,
                    options.reserve_concurrency,
                    options.profile,
                )
                tps[lanes, latency] = result["orders_per_s"]
                spent[lanes, latency] = sum(result[k] for k in ("cpu_ms_per_order", "stripe_cpu_ms_per_order",
                                                                "postgres_cpu_ms_per_order"))  # fmt: skip
                one_lane = tps.get((lane_counts[0], latency), float("nan"))
                print(
                    f"{lanes:>5} {latency * 1000:>6.0f}ms {result['orders_per_s']:>9.0f} "
                    f"{result['orders_per_s'] / one_lane:>8.2f}x {result['p50_ms']:>8.1f} "
                    f"{result['p95_ms']:>8.1f} {result['p99_ms']:>8.1f} {result['cache_hit_rate']:>9.3f} "
                    f"{result['serialization_retries']:>8.0f} {result['payment_retries']:>11.0f} "
                    f"{result['in_flight_limit']:>6.0f} "
                    f"{result['in_flight_limit_peak']:>5.0f} {result['cpu_ms_per_order']:>13.2f} "
                    f"{result['stripe_cpu_ms_per_order']:>12.2f} {result['postgres_cpu_ms_per_order']:>9.2f} "
                    f"{result['imports_cpu_s']:>10.2f}",
                    flush=True,
                )
        anchor = pgbench_tps(admin_url, clients=8, seconds=options.pgbench_seconds)
        ceiling = ceiling_tps(admin_url, clients=options.reserve_concurrency, seconds=options.pgbench_seconds)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print(f"pgbench TPC-B (scale 10, 8 clients): {anchor:.0f} tps")
        cores = os.cpu_count() or 1
        for lanes in lane_counts:
            row = {latency: tps[lanes, latency] for latency in latencies}
            bound = {latency: cores * 1000 / spent[lanes, latency] for latency in latencies}
            print(
                f"{lanes} lane(s): orders/s : pgbench tps = {per_latency({k: v / anchor for k, v in row.items()})}"
            )
            print(
                f"{lanes} lane(s): CPU bound, {cores} cores / ms per order (ledger + fake Stripe + PostgreSQL) "
                f"= orders/s at most {per_latency(bound)}, with the machine to ourselves"
            )
            for name, rate in ceiling.items():
                clients = GROUP_CLIENTS if name.startswith("groups of") else options.reserve_concurrency
                print(
                    f"{lanes} lane(s): ceiling, the ledger's SQL in pgbench ({name}, {clients} clients): "
                    f"{rate:.0f} orders/s; ledger at {per_latency({k: v / rate for k, v in row.items()})}"
                )


def per_latency(values: dict[float, float]) -> str:
    return ", ".join(f"{value:.2f} ({latency * 1000:.0f} ms)" for latency, value in values.items())


if __name__ == "__main__":
    main()
