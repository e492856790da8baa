"""Order ledger throughput on PostgreSQL, beside pgbench's TPC-B on the same server in the same run.

    uv run python bench/orders.py [--orders 2000] [--min-in-flight 2] [--max-in-flight 256]
                                  [--workers N (a fixed N in flight)] [--reserve-concurrency 8]
                                  [--processes 1] [--gateway-ms 0,50] [--database-url postgresql://...]

Each scenario lands `--orders` signed events (1-3 distinct lines each, products drawn Zipf-skewed
from a 1,000-product catalog) in the SQL inbox, then times `OrderLedger.process_batch`:
authenticity, validation, cached catalog, the SERIALIZABLE reserve transaction, the Stripe SDK call
to the fake Stripe server (another process, at 0 ms and 50 ms added latency), and the PAID
transaction. With `--processes N` the events go to N inbox partitions and N processes run one
ledger each over its own partition, as N parallel runs would.

It prints orders/s, per-order p50/p95/p99, the in-flight limit the ledger ended at (and its
peak), and the CPU per order of the ledger, of the fake Stripe
server and of PostgreSQL (all three share the machine's cores, so their sum bounds orders/s), then
pgbench TPC-B tps (scale 10, 8 clients) and the ceiling: the ledger's own per-order SQL
(`RESERVE_ORDER` at SERIALIZABLE, then `RECORD_PAID`) run by pgbench's C client on the real schema,
which no implementation on this server can beat. Without `--database-url` a throwaway cluster is
started with Debian's binaries (as user postgres) and default durability settings.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import sqlalchemy as sa  # noqa: E402

from hub_pipelines.core.schema import upgrade_schema  # noqa: E402
from hub_pipelines.orders.catalog import Catalog, add_missing_products  # noqa: E402
from hub_pipelines.orders.metrics import percentile  # noqa: E402
from hub_pipelines.orders.pii import PiiCipher, new_key_setting  # noqa: E402
from hub_pipelines.orders.processing import OrderLedger  # noqa: E402
from hub_pipelines.orders.reservation_sql import RECORD_PAID, RESERVE_ORDER  # noqa: E402
from hub_pipelines.resources.payment_gateway import StripeGateway  # noqa: E402
from hub_pipelines.resources.sql_database import PostgresDatabase  # noqa: E402
from tests.orders.support import HMAC_SECRET, Inbox, authenticator, order_event  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PRODUCTS = 1000
ZIPF_EXPONENT = 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_postgres(*args: object) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *map(str, args)]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="hub-bench-pg-"))
    shutil.chown(root, user="postgres", group="postgres")
    data, port = root / "data", free_port()
    subprocess.run(as_postgres(PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"),
                   check=True, capture_output=True)  # fmt: skip
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB"
    )
    subprocess.run(as_postgres(PG_BIN / "pg_ctl", "start", "-w", "-D", data, "-l", root / "log", "-o", options),
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres(PG_BIN / "pg_ctl", "stop", "-m", "fast", "-D", data), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


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


def fresh_database(admin_url: str, name: str) -> str:
    engine = sa.create_engine(
        sa.make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))


def skewed_products(rng: random.Random, count: int) -> list[int]:
    """`count` distinct product numbers, popular ones more often: Zipf-like weights 1/(rank+1)^0.8
    over the catalog, so the best seller is in ~6% of the lines, the top 10 in ~25%, and the long
    tail still sells (a real shop's mix; every order on the same 3 products is not)."""
    chosen: list[int] = []
    while len(chosen) < count:
        product = rng.choices(range(PRODUCTS), cum_weights=CUMULATIVE_WEIGHTS)[0]
        if product not in chosen:
            chosen.append(product)
    return chosen


CUMULATIVE_WEIGHTS = list(itertools.accumulate(1 / (rank + 1) ** ZIPF_EXPONENT for rank in range(PRODUCTS)))


def run_scenario(
    admin_url: str,
    latency_s: float,
    orders: int,
    in_flight: tuple[int, int],
    processes: int,
    reserve_concurrency: int,
) -> dict[str, float]:
    url = fresh_database(admin_url, f"bench_orders_{int(latency_s * 1000)}ms")
    database = PostgresDatabase(url=url, pool_size=reserve_concurrency + 4, max_overflow=8)
    upgrade_schema(database.engine)
    rng = random.Random(42)
    add_missing_products(
        database, [(f"p-{n}", f"Product {n}", "USD", 100 + n, 1_000_000) for n in range(PRODUCTS)]
    )
    events: list[list[dict[str, object]]] = [[] for _ in range(processes)]
    for n in range(orders):
        items = [
            (f"p-{p}", rng.randint(1, 3), f"{(100 + p) / 100:.2f}")
            for p in skewed_products(rng, rng.randint(1, 3))
        ]
        events[n % processes].append(order_event(customer=f"c-{n % 5000}", items=items))
    for partition, share in enumerate(events):
        Inbox(database, partition=partition).land_events(share)
    database.dispose()
    pii_keys = new_key_setting()
    postgres_cpu = postgres_cpu_seconds(admin_url)
    with fake_stripe(latency_s) as (base_url, stripe_pid):
        stripe_cpu = cpu_seconds(stripe_pid)
        settings = (url, base_url, pii_keys, in_flight, reserve_concurrency)
        if processes == 1:
            results = [run_ledger(settings, 0, None)]
        else:
            context = multiprocessing.get_context("spawn")
            with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
                start = manager.Barrier(processes)
                results = list(
                    pool.map(run_ledger, [settings] * processes, range(processes), [start] * processes)
                )
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
        "cache_hit_rate": sum(result["cache_hit_rate"] for result in results) / processes,
        "in_flight_limit": max(result["in_flight_limit"] for result in results),
        "in_flight_limit_peak": max(result["in_flight_limit_peak"] for result in results),
        "serialization_retries": sum(result["serialization_retries"] for result in results),
        "cpu_ms_per_order": sum(result["cpu_s"] for result in results) / orders * 1000,
        "stripe_cpu_ms_per_order": stripe_cpu / orders * 1000,
        "postgres_cpu_ms_per_order": (
            (postgres_after - postgres_cpu) / orders * 1000
            if postgres_cpu is not None and postgres_after is not None
            else float("nan")
        ),
    }


def run_ledger(
    settings: tuple[str, str, str, tuple[int, int], int], partition: int, start: Any
) -> dict[str, Any]:
    """One run of the ledger over one inbox partition (in this process or a child process); the
    clock starts when every process is ready (`start` is a shared barrier)."""
    url, base_url, pii_keys, (min_in_flight, max_in_flight), reserve_concurrency = settings
    database = PostgresDatabase(url=url, pool_size=reserve_concurrency + 4, max_overflow=8)
    gateway = StripeGateway(
        api_key="sk_test_bench",
        api_base=base_url,
        breaker_name=f"bench-{uuid.uuid4()}",
        max_connections=min(max_in_flight, 128),
    )
    ledger = OrderLedger(
        database,
        Catalog(database),
        gateway,
        authenticator(hmac_secret=HMAC_SECRET),
        cipher=PiiCipher.from_setting(pii_keys),
        partitions=frozenset({partition}),
        min_in_flight=min_in_flight,
        max_in_flight=max_in_flight,
        reserve_concurrency=reserve_concurrency,
    )
    if start is not None:
        start.wait()
    started, cpu = time.time(), time.process_time()
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
        "cpu_s": cpu_s,
        "started": started,
        "ended": ended,
    }


def pgbench_tps(admin_url: str, clients: int, seconds: int) -> float:
    url = sa.make_url(admin_url)
    common = ["-h", str(url.host), "-p", str(url.port), "-U", str(url.username)]
    fresh_database(admin_url, "pgbench")
    subprocess.run([str(PG_BIN / "pgbench"), *common, "-i", "-s", "10", "-q", "pgbench"],
                   check=True, capture_output=True)  # fmt: skip
    return run_pgbench([*common, "-c", str(clients), "-j", "2", "-T", str(seconds), "pgbench"])


CEILING_ORDERS = 20_000

# Everything the ledger computes in Python before its transaction (ids, the PII ciphertext, the posting,
# the outbox payload), drawn outside the measured transaction from pre-drawn orders by one SELECT.
CEILING_DRAW = """
\\set n random(1, {orders})
SELECT l.product_ids, l.quantities, l.prices, l.total_minor, l.item_count,
       o.order_id, o.order_id AS idempotency_key, o.event_id, 'c-' || (:n % 5000) AS customer_id,
       decode(md5(o.order_id) || md5(o.event_id) || md5(o.posting_id), 'hex') AS email_ciphertext,
       decode(md5(o.event_id) || md5(o.order_id), 'hex') AS phone_ciphertext, 'k1' AS pii_key_id,
       'USD' AS currency, 'pm_card_visa' AS payment_method, 'RESERVED' AS status, o.posting_id,
       'order placed' AS memo, '{{accounts_receivable,revenue}}' AS accounts,
       '{{' || l.total_minor || ',0}}' AS debits, '{{0,' || l.total_minor || '}}' AS credits,
       o.outbox_event_id, 'order.created' AS outbox_event_type,
       convert_to(repeat('x', 220), 'UTF8') AS outbox_payload,
       '00-' || md5(o.order_id) || '-' || left(md5(o.event_id), 16) || '-01' AS traceparent,
       'orders' AS topic, 0 AS partition, nextval('bench_offsets') AS offset,
       o.event_id AS intake_event_id, 'accepted' AS outcome,
       ARRAY[o.order_id] AS order_ids, ARRAY['pi_' || md5(o.order_id)] AS references,
       ARRAY[l.total_minor] AS amounts, ARRAY['USD'] AS currencies, ARRAY[o.paid_posting_id] AS posting_ids,
       ARRAY[o.paid_event_id] AS event_ids, ARRAY[convert_to(repeat('y', 120), 'UTF8')] AS payloads,
       ARRAY['00-' || md5(o.event_id) || '-' || left(md5(o.order_id), 16) || '-01'] AS traceparents,
       'payment captured' AS paid_memo, 'gateway_clearing' AS debit_account,
       'accounts_receivable' AS credit_account
FROM bench_order_lines AS l,
     LATERAL (SELECT gen_random_uuid()::text AS order_id, gen_random_uuid()::text AS event_id,
                     gen_random_uuid()::text AS posting_id, gen_random_uuid()::text AS outbox_event_id,
                     gen_random_uuid()::text AS paid_posting_id, gen_random_uuid()::text AS paid_event_id) AS o
WHERE l.n = :n \\gset
"""


def ceiling_scripts(directory: Path) -> dict[str, Path]:
    """pgbench scripts of the ledger's own SQL, statement for statement: the reserve transaction
    (SERIALIZABLE, RESERVE_ORDER: the call of the `reserve_order` function), then the PAID
    transaction (READ COMMITTED, RECORD_PAID for this one order; the ledger group-commits it, so
    its real PAID costs less). "reserve alone" is the bound no PAID batching can pass."""
    draw = CEILING_DRAW.format(orders=CEILING_ORDERS)
    reserve = f"BEGIN ISOLATION LEVEL SERIALIZABLE;\n{RESERVE_ORDER.text.strip()};\nCOMMIT;\n"
    paid = RECORD_PAID.text.strip().replace(":memo", ":paid_memo") + ";\n"
    scripts = {"reserve + PAID": draw + reserve + paid, "reserve alone": draw + reserve}
    paths = {}
    for number, (name, text) in enumerate(scripts.items()):
        paths[name] = directory / f"ceiling-{number}.sql"
        paths[name].write_text(text)
    return paths


def ceiling_tps(admin_url: str, clients: int, seconds: int) -> dict[str, float]:
    """Transactions per second of the ledger's per-order SQL run by pgbench (C, no Python) on the
    real schema and catalog, products drawn with the benchmark's own skew; lost races retried."""
    url = fresh_database(admin_url, "bench_orders_ceiling")
    database = PostgresDatabase(url=url)
    upgrade_schema(database.engine)
    add_missing_products(
        database, [(f"p-{n}", f"Product {n}", "USD", 100 + n, 1_000_000_000) for n in range(PRODUCTS)]
    )
    rng = random.Random(7)
    rows = []
    for n in range(1, CEILING_ORDERS + 1):
        chosen = skewed_products(rng, rng.randint(1, 3))
        quantities = [rng.randint(1, 3) for _ in chosen]
        prices = [100 + p for p in chosen]
        rows.append(
            {
                "n": n,
                "product_ids": [f"p-{p}" for p in chosen],
                "quantities": quantities,
                "prices": prices,
                "total_minor": sum(q * p for q, p in zip(quantities, prices, strict=True)),
                "item_count": sum(quantities),
            }
        )
    with database.transaction() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE bench_order_lines (n integer PRIMARY KEY, product_ids text[], "
                "quantities integer[], prices bigint[], total_minor bigint, item_count integer);"
                "CREATE SEQUENCE bench_offsets"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO bench_order_lines VALUES "
                "(:n, :product_ids, :quantities, :prices, :total_minor, :item_count)"
            ),
            rows,
        )
        connection.execute(sa.text("ANALYZE bench_order_lines"))
    database.dispose()
    parsed = sa.make_url(url)
    common = ["-h", str(parsed.host), "-p", str(parsed.port), "-U", str(parsed.username)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="hub-bench-ceiling-") as directory:
        for name, script in ceiling_scripts(Path(directory)).items():
            results[name] = run_pgbench(
                [*common, "-n", "-M", "prepared", "--max-tries=30", "-f", str(script),
                 "-c", str(clients), "-j", "2", "-T", str(seconds), str(parsed.database)]
            )  # fmt: skip
    return results


def run_pgbench(arguments: list[str]) -> float:
    result = subprocess.run([str(PG_BIN / "pgbench"), *arguments], check=True, capture_output=True, text=True)
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    # tps counts committed transactions only. A race lost `--max-tries` times in a row on the
    # hottest product counts as failed; more than a few in a thousand would mean a broken script.
    failed = re.search(r"number of failed transactions: ([0-9]+)", result.stdout)
    done = re.search(r"number of transactions actually processed: ([0-9]+)", result.stdout)
    if failed and done and int(failed.group(1)) > 0.002 * max(1, int(done.group(1))):
        raise RuntimeError(f"pgbench transactions failed:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


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
    parser.add_argument("--processes", type=int, default=1, help="ledger runs over disjoint partitions")
    parser.add_argument("--database-url", help="an existing server (superuser) instead of a throwaway one")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument(
        "--gateway-ms",
        default="0,50",
        help="added latencies of the fake Stripe, one scenario each (Stripe: ~300)",
    )
    options = parser.parse_args()
    in_flight = (
        (options.workers, options.workers)
        if options.workers
        else (options.min_in_flight, options.max_in_flight)
    )
    server = contextlib.nullcontext(options.database_url) if options.database_url else throwaway_postgres()
    with server as admin_url:
        print(
            f"order ledger: {options.orders} orders per scenario, {options.processes} process(es) x "
            f"{in_flight[0]}..{in_flight[1]} orders in flight, {options.reserve_concurrency} reserving "
            f"at once, 1-3 lines each over {PRODUCTS} products (Zipf {ZIPF_EXPONENT}); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'gateway':>8} {'orders/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'hit rate':>9} "
            f"{'retries':>8} {'limit':>6} {'peak':>5} {'cpu ms/order':>13} {'stripe fake':>12} "
            f"{'postgres':>9}"
        )
        tps, spent = {}, {}
        latencies = [float(ms) / 1000 for ms in options.gateway_ms.split(",")]

        def per_latency(values: dict[float, float]) -> str:
            return ", ".join(f"{value:.2f} ({latency * 1000:.0f} ms)" for latency, value in values.items())

        for latency in latencies:
            result = run_scenario(
                admin_url,
                latency,
                options.orders,
                in_flight,
                options.processes,
                options.reserve_concurrency,
            )
            tps[latency] = result["orders_per_s"]
            spent[latency] = sum(result[k] for k in ("cpu_ms_per_order", "stripe_cpu_ms_per_order",
                                                     "postgres_cpu_ms_per_order"))  # fmt: skip
            print(
                f"{latency * 1000:>6.0f}ms {result['orders_per_s']:>9.0f} {result['p50_ms']:>8.1f} "
                f"{result['p95_ms']:>8.1f} {result['p99_ms']:>8.1f} {result['cache_hit_rate']:>9.3f} "
                f"{result['serialization_retries']:>8.0f} {result['in_flight_limit']:>6.0f} "
                f"{result['in_flight_limit_peak']:>5.0f} {result['cpu_ms_per_order']:>13.2f} "
                f"{result['stripe_cpu_ms_per_order']:>12.2f} {result['postgres_cpu_ms_per_order']:>9.2f}"
            )
        anchor = pgbench_tps(admin_url, clients=8, seconds=options.pgbench_seconds)
        ceiling = ceiling_tps(admin_url, clients=options.reserve_concurrency, seconds=options.pgbench_seconds)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print(f"pgbench TPC-B (scale 10, 8 clients): {anchor:.0f} tps")
        print(f"ratio orders/s : pgbench tps = {per_latency({k: v / anchor for k, v in tps.items()})}")
        cores = os.cpu_count() or 1
        bound = {latency: cores * 1000 / ms for latency, ms in spent.items()}
        print(
            f"CPU bound: {cores} cores / ms per order (ledger + fake Stripe + PostgreSQL) = orders/s at most "
            f"{per_latency(bound)}, with the machine to ourselves"
        )
        for name, rate in ceiling.items():
            print(
                f"ceiling, the ledger's SQL in pgbench ({name}, {options.reserve_concurrency} clients): "
                f"{rate:.0f} orders/s; ledger at {per_latency({k: v / rate for k, v in tps.items()})}"
            )


if __name__ == "__main__":
    main()
