"""Order ledger throughput on PostgreSQL, beside pgbench's TPC-B on the same server in the same run.

    uv run python bench/orders.py [--orders 2000] [--workers 64] [--database-url postgresql://...]

Each scenario lands `--orders` signed events (1-3 lines over 1,000 products) in the SQL inbox, then
times `OrderLedger.process_batch`: authenticity, validation, cached catalog, the SERIALIZABLE reserve
transaction, the Stripe SDK call to the fake Stripe server (another process, at 0 ms and 50 ms added
latency), and the PAID transaction. It prints orders/s and per-order p50/p95/p99, then pgbench TPC-B
tps (scale 10, 8 clients, 15 s). Without `--database-url` a throwaway cluster is started with Debian's
binaries (as user postgres) and default durability settings.
"""

from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import sqlalchemy as sa  # noqa: E402

from hub_pipelines.core.schema import upgrade_schema  # noqa: E402
from hub_pipelines.orders.catalog import Catalog, add_missing_products  # noqa: E402
from hub_pipelines.orders.pii import PiiCipher, new_key_setting  # noqa: E402
from hub_pipelines.orders.processing import OrderLedger  # noqa: E402
from hub_pipelines.resources.payment_gateway import StripeGateway  # noqa: E402
from hub_pipelines.resources.sql_database import PostgresDatabase  # noqa: E402
from tests.orders.support import HMAC_SECRET, Inbox, authenticator, order_event  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PRODUCTS = 1000


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


@contextlib.contextmanager
def fake_stripe(latency_s: float) -> Iterator[str]:
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
        yield f"http://127.0.0.1:{port}"
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


def run_scenario(admin_url: str, latency_s: float, orders: int, workers: int) -> dict[str, float]:
    url = fresh_database(admin_url, f"bench_orders_{int(latency_s * 1000)}ms")
    database = PostgresDatabase(url=url, pool_size=workers + 4, max_overflow=8)
    upgrade_schema(database.engine)
    rng = random.Random(42)
    add_missing_products(
        database, [(f"p-{n}", f"Product {n}", "USD", 100 + n, 1_000_000) for n in range(PRODUCTS)]
    )
    events = []
    for n in range(orders):
        lines = rng.sample(range(PRODUCTS), rng.randint(1, 3))
        items = [(f"p-{p}", rng.randint(1, 3), f"{(100 + p) / 100:.2f}") for p in lines]
        events.append(order_event(customer=f"c-{n % 5000}", items=items))
    Inbox(database).land_events(events)
    with fake_stripe(latency_s) as base_url:
        gateway = StripeGateway(
            api_key="sk_test_bench", api_base=base_url, breaker_name=f"bench-{uuid.uuid4()}"
        )
        ledger = OrderLedger(
            database,
            Catalog(database),
            gateway,
            authenticator(hmac_secret=HMAC_SECRET),
            cipher=PiiCipher.from_setting(new_key_setting()),
            max_workers=workers,
        )
        started = time.perf_counter()
        report = ledger.process_batch(orders)
        elapsed = time.perf_counter() - started
    database.dispose()
    paid = report.count("paid")
    assert paid == orders, f"only {paid} of {orders} orders were paid: {report.counts}"
    return {
        "orders_per_s": paid / elapsed,
        "p50_ms": report.order_ms(50),
        "p95_ms": report.order_ms(95),
        "p99_ms": report.order_ms(99),
        "cache_hit_rate": report.cache.hit_rate,
        "serialization_retries": report.serialization_retries,
    }


def pgbench_tps(admin_url: str, clients: int, seconds: int) -> float:
    url = sa.make_url(admin_url)
    common = ["-h", str(url.host), "-p", str(url.port), "-U", str(url.username)]
    fresh_database(admin_url, "pgbench")
    pgbench = str(PG_BIN / "pgbench")
    subprocess.run([pgbench, *common, "-i", "-s", "10", "-q", "pgbench"], check=True, capture_output=True)
    result = subprocess.run(
        [pgbench, *common, "-c", str(clients), "-j", "2", "-T", str(seconds), "pgbench"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--database-url", help="an existing server (superuser) instead of a throwaway one")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    options = parser.parse_args()
    server = contextlib.nullcontext(options.database_url) if options.database_url else throwaway_postgres()
    with server as admin_url:
        print(
            f"order ledger: {options.orders} orders per scenario, {options.workers} workers, 1-3 lines each"
        )
        print(
            f"{'gateway':>8} {'orders/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'hit rate':>9} {'retries':>8}"
        )
        tps = {}
        for latency in (0.0, 0.05):
            result = run_scenario(admin_url, latency, options.orders, options.workers)
            tps[latency] = result["orders_per_s"]
            print(
                f"{latency * 1000:>6.0f}ms {result['orders_per_s']:>9.0f} {result['p50_ms']:>8.1f} "
                f"{result['p95_ms']:>8.1f} {result['p99_ms']:>8.1f} {result['cache_hit_rate']:>9.3f} "
                f"{result['serialization_retries']:>8.0f}"
            )
        anchor = pgbench_tps(admin_url, clients=8, seconds=options.pgbench_seconds)
        print(f"pgbench TPC-B (scale 10, 8 clients): {anchor:.0f} tps")
        print(
            f"ratio orders/s : pgbench tps = {tps[0.0] / anchor:.2f} (0 ms), {tps[0.05] / anchor:.2f} (50 ms)"
        )


if __name__ == "__main__":
    main()
