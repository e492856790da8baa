"""PostgreSQL for the orders benchmark, and its two pgbench anchors (imported by bench/orders.py).

A throwaway cluster started with Debian's binaries (as user postgres, default durability settings);
the benchmark's Zipf-skewed product mix; pgbench's TPC-B; and the ceiling: the ledger's own per-order
SQL run by pgbench's C client on the real schema and catalog, which no implementation on this server
can beat.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from hub_pipelines.core.schema import upgrade_schema
from hub_pipelines.orders.catalog import add_missing_products
from hub_pipelines.orders.reservation_sql import RECORD_PAID, RESERVE_ORDER, RESERVE_ORDERS_PSYCOPG
from hub_pipelines.resources.sql_database import PostgresDatabase

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


def pgbench_tps(admin_url: str, clients: int, seconds: int) -> float:
    url = sa.make_url(admin_url)
    common = ["-h", str(url.host), "-p", str(url.port), "-U", str(url.username)]
    fresh_database(admin_url, "pgbench")
    subprocess.run([str(PG_BIN / "pgbench"), *common, "-i", "-s", "10", "-q", "pgbench"],
                   check=True, capture_output=True)  # fmt: skip
    return run_pgbench([*common, "-c", str(clients), "-j", "2", "-T", str(seconds), "pgbench"])


CEILING_ORDERS = 20_000

# One order of RECORD_PAID's `settled` document, as the ledger writes it (the payload as base64).
SETTLED_ORDER = (
    "jsonb_build_object('order_id', o.order_id, 'reference', 'pi_' || md5(o.order_id), "
    "'amount_minor', l.total_minor, 'currency', 'USD', 'posting_id', o.paid_posting_id, "
    "'event_id', o.paid_event_id, 'payload', encode(convert_to(repeat('y', 120), 'UTF8'), 'base64'), "
    "'traceparent', '00-' || md5(o.event_id) || '-' || left(md5(o.order_id), 16) || '-01')"
)

# Everything the ledger computes in Python before its transaction (ids, the PII ciphertext, the posting,
# the outbox payload), drawn outside the measured transaction from pre-drawn orders by one SELECT.
CEILING_DRAW = """
\\set n random(1, {orders})
SELECT l.product_ids, l.quantities, l.prices, l.total_minor, l.item_count,
       o.order_id, o.order_id AS idempotency_key, o.event_id, 'c-' || (:n % 5000) AS customer_id,
       decode(md5(o.order_id) || md5(o.event_id) || md5(o.posting_id), 'hex') AS email_ciphertext,
       decode(md5(o.event_id) || md5(o.order_id), 'hex') AS phone_ciphertext, 'k1' AS pii_key_id,
       'USD' AS currency, 'pm_card_visa' AS payment_method, 'RESERVED' AS status, o.posting_id,
       md5(o.event_id) || md5(o.order_id) AS request_sha256,
       'order placed' AS memo, '{{accounts_receivable,revenue}}' AS accounts,
       '{{' || l.total_minor || ',0}}' AS debits, '{{0,' || l.total_minor || '}}' AS credits,
       o.outbox_event_id, 'order.created' AS outbox_event_type,
       convert_to(repeat('x', 220), 'UTF8') AS outbox_payload,
       '00-' || md5(o.order_id) || '-' || left(md5(o.event_id), 16) || '-01' AS traceparent,
       'orders' AS topic, 0 AS partition, nextval('bench_offsets') AS offset,
       o.event_id AS intake_event_id, 'accepted' AS outcome,
       jsonb_build_array({settled_order})::text AS settled,
       'payment captured' AS paid_memo, 'gateway_clearing' AS debit_account,
       'accounts_receivable' AS credit_account
FROM bench_order_lines AS l,
     LATERAL (SELECT gen_random_uuid()::text AS order_id, gen_random_uuid()::text AS event_id,
                     gen_random_uuid()::text AS posting_id, gen_random_uuid()::text AS outbox_event_id,
                     gen_random_uuid()::text AS paid_posting_id, gen_random_uuid()::text AS paid_event_id) AS o
WHERE l.n = :n \\gset
"""


# A group of consecutive pre-drawn orders as the ledger sends them to `reserve_orders` (one JSON array,
# bytea as base64), and the group's PAID document. The LATERAL refers to `l` so that each order
# draws its own ids.
CEILING_GROUP_DRAW = """
\\set n random(1, {orders} - {group})
SELECT jsonb_agg(jsonb_build_object(
           'order_id', o.order_id, 'idempotency_key', o.order_id, 'event_id', o.event_id,
           'customer_id', 'c-' || (l.n % 5000),
           'email_ciphertext', encode(decode(md5(o.order_id) || md5(o.event_id) || md5(o.posting_id), 'hex'), 'base64'),
           'phone_ciphertext', encode(decode(md5(o.event_id) || md5(o.order_id), 'hex'), 'base64'),
           'pii_key_id', 'k1', 'currency', 'USD', 'total_minor', l.total_minor, 'item_count', l.item_count,
           'payment_method', 'pm_card_visa', 'status', 'RESERVED',
           'request_sha256', md5(o.event_id) || md5(o.order_id),
           'product_ids', to_jsonb(l.product_ids), 'quantities', to_jsonb(l.quantities),
           'prices', to_jsonb(l.prices), 'posting_id', o.posting_id, 'memo', 'order placed',
           'accounts', jsonb_build_array('accounts_receivable', 'revenue'),
           'debits', jsonb_build_array(l.total_minor, 0), 'credits', jsonb_build_array(0, l.total_minor),
           'outbox_event_id', o.outbox_event_id, 'outbox_event_type', 'order.created',
           'outbox_payload', encode(convert_to(repeat('x', 220), 'UTF8'), 'base64'),
           'traceparent', '00-' || md5(o.order_id) || '-' || left(md5(o.event_id), 16) || '-01',
           'topic', 'orders', 'partition', 0, 'offset', nextval('bench_offsets'),
           'intake_event_id', o.event_id, 'outcome', 'accepted') ORDER BY l.n)::text AS group_orders,
       jsonb_agg({settled_order} ORDER BY l.n)::text AS settled,
       'payment captured' AS paid_memo, 'gateway_clearing' AS debit_account,
       'accounts_receivable' AS credit_account
FROM bench_order_lines AS l,
     LATERAL (SELECT gen_random_uuid()::text AS order_id, gen_random_uuid()::text AS event_id,
                     gen_random_uuid()::text AS posting_id, gen_random_uuid()::text AS outbox_event_id,
                     gen_random_uuid()::text AS paid_posting_id, gen_random_uuid()::text AS paid_event_id
              WHERE l.n IS NOT NULL) AS o
WHERE l.n BETWEEN :n AND :n + {group} - 1 \\gset
"""


def ceiling_scripts(directory: Path, group: int) -> dict[str, Path]:
    """pgbench scripts of the ledger's own SQL, statement for statement: the reserve transaction
    (SERIALIZABLE, RESERVE_ORDER: the call of the `reserve_order` function), then the PAID
    transaction (READ COMMITTED, RECORD_PAID for this one order; the ledger group-commits it, so
    its real PAID costs less). "reserve alone" is the bound no PAID batching can pass."""
    draw = CEILING_DRAW.format(orders=CEILING_ORDERS, settled_order=SETTLED_ORDER)
    reserve = f"BEGIN ISOLATION LEVEL SERIALIZABLE;\n{RESERVE_ORDER.text.strip()};\nCOMMIT;\n"
    paid = RECORD_PAID.text.strip().replace(":memo", ":paid_memo") + ";\n"
    reserve_group = RESERVE_ORDERS_PSYCOPG.replace("%s", ":group_orders")
    grouped = (
        CEILING_GROUP_DRAW.format(orders=CEILING_ORDERS, group=group, settled_order=SETTLED_ORDER)
        + f"BEGIN ISOLATION LEVEL SERIALIZABLE;\n{reserve_group};\nCOMMIT;\n"
        + paid
    )
    scripts = {
        "reserve + PAID": draw + reserve + paid,
        "reserve alone": draw + reserve,
        f"groups of {group}: reserve + PAID": grouped,
    }
    paths = {}
    for number, (name, text) in enumerate(scripts.items()):
        paths[name] = directory / f"ceiling-{number}.sql"
        paths[name].write_text(text)
    return paths


GROUP_CLIENTS = 1
"""Clients of the grouped ceiling: a ledger reserves one group at a time, and groups of skewed
products sent by two clients at once mostly abort each other (SERIALIZABLE: 46-52% of them retried,
75-101 orders/s against 452 for one client), which would lower the ceiling rather than show it."""


def ceiling_tps(admin_url: str, clients: int, seconds: int, group: int = 16) -> dict[str, float]:
    """Orders per second of the ledger's SQL run by pgbench (C, no Python) on the real schema and
    catalog, products drawn with the benchmark's own skew, lost races retried: order by order
    (`clients` at once), and in groups of `group` (one `reserve_orders` transaction, then one PAID
    for the group; GROUP_CLIENTS at once)."""
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
        for name, script in ceiling_scripts(Path(directory), group).items():
            grouped = name.startswith("groups of")
            results[name] = (group if grouped else 1) * run_pgbench(
                [*common, "-n", "-M", "prepared", "--max-tries=30", "-f", str(script),
                 "-c", str(GROUP_CLIENTS if grouped else clients), "-j", "2", "-T", str(seconds),
                 str(parsed.database)]
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
