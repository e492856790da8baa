"""The checker: after the nemesis stops and the system drains, every guarantee, input by input.

An anomaly carries the evidence to find it again: the message's topic position and event id, the
order id, the upload's key, the store and the needle.
"""

from __future__ import annotations

import glob
import hashlib
import re
import shutil
import subprocess
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import redis
import sqlalchemy as sa

from chaos.confirmations import check_confirmations
from chaos.deployment import Deployment
from chaos.nemesis import Fault
from chaos.workload import DUPLICATE, IMAGE, INFECTED, LATE, MALFORMED, PDF, VALID, Produced
from hub_pipelines import settings
from hub_pipelines.analytics.counters import events_per_minute_from_cache, events_per_minute_in_warehouse
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.core.platform_tables import dead_letters, media_uploads
from hub_pipelines.landing.batches import TopicCursor
from hub_pipelines.landing.offsets import parse_ranges
from hub_pipelines.media.records import media_publications, media_variants
from hub_pipelines.orders.invariants import check_invariants
from hub_pipelines.orders.reservation import ACCEPTED, PARKED, REJECTED
from hub_pipelines.orders.reservation import DUPLICATE as INTAKE_DUPLICATE
from hub_pipelines.orders.tables import FAILED, PAID, order_intake, orders
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import RedisCache
from hub_pipelines.resources.media.media_settings import MediaSettings
from hub_pipelines.resources.sql_database import PostgresDatabase
from hub_pipelines.sensors.run_failures import run_error
from tests.orders.pii_canaries import Canary

TOPIC_SENSORS = {"orders_topic_sensor": settings.ORDERS_TOPIC, "events_topic_sensor": settings.EVENTS_TOPIC}


@dataclass(frozen=True)
class Anomaly:
    kind: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Findings:
    anomalies: list[Anomaly] = field(default_factory=list)
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # When each PAID order was produced and paid (epoch seconds), for the latencies split by run below.
    paid_orders: list[tuple[float, float]] = field(default_factory=list)
    # Seconds each finished run spent requested -> executing (queue, launch, process start) and executing.
    run_phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, detail: str, **evidence: Any) -> None:
        self.anomalies.append(Anomaly(kind, detail, evidence))


def failure_cause(error: str) -> str:
    """A run's first error line with its numbers masked: the same cause reads the same."""
    first = error.strip().splitlines()[0] if error.strip() else ""
    return re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", first)


def check_orders(
    database: PostgresDatabase, produced: Produced, charges: list[dict[str, Any]], found: Findings
) -> None:
    topic = settings.ORDERS_TOPIC
    with database.transaction() as connection:
        letters = connection.execute(
            sa.select(
                dead_letters.c.partition,
                dead_letters.c.offset,
                dead_letters.c.event_id,
                dead_letters.c.reason,
            ).where(dead_letters.c.topic == topic)
        ).all()
        intake = connection.execute(
            sa.select(
                order_intake.c.partition, order_intake.c.offset, order_intake.c.event_id,
                order_intake.c.outcome, order_intake.c.order_id, order_intake.c.reason,
            ).where(order_intake.c.topic == topic)
        ).all()  # fmt: skip
        order_rows = {
            row.order_id: row
            for row in connection.execute(
                sa.select(orders.c.order_id, orders.c.status, orders.c.failure_reason, orders.c.paid_at)
            )
        }
    letter_at = {(row.partition, row.offset): row for row in letters}
    letter_of = {row.event_id: row for row in letters if row.event_id}
    intake_at = {(row.partition, row.offset): row for row in intake}
    intake_of = {row.event_id: row for row in intake}
    for message in produced.orders:
        position = {"partition": message.partition, "offset": message.offset, "event_id": message.event_id}
        letter = letter_at.get((message.partition, message.offset))
        booked = intake_at.get((message.partition, message.offset))
        if booked is None and letter is None and message.event_id is not None:
            # Exact copies share the event id and only the first landed is stored (not always the first
            # produced: copies sit on other partitions); the others end where it ended.
            booked = intake_of.get(message.event_id)
            letter = letter_of.get(message.event_id)
        if letter is None and booked is not None and booked.outcome == PARKED:
            letter = letter_of.get(message.event_id or "")
        if letter is not None:
            if not letter.reason:
                found.add(
                    "order dead-lettered without a reason",
                    f"orders {message.partition}:{message.offset}",
                    **position,
                )
            if booked is not None and booked.outcome in (ACCEPTED, INTAKE_DUPLICATE):
                found.add("order both dead-lettered and accepted", booked.order_id or "", **position)
            found.outcomes[f"orders.{message.kind}"]["dead_lettered"] += 1
            continue
        if booked is None:
            found.add("order lost", f"orders {message.partition}:{message.offset} ended nowhere", **position)
            continue
        if booked.outcome == REJECTED:
            if not booked.reason:
                found.add(
                    "order rejected without a reason",
                    f"orders {message.partition}:{message.offset}",
                    **position,
                )
            found.outcomes[f"orders.{message.kind}"]["rejected"] += 1
            continue
        order = order_rows.get(booked.order_id)
        if order is None or order.status not in (PAID, FAILED):
            status = order.status if order is not None else "missing"
            found.add(
                "order not final",
                f"order {booked.order_id} is {status}",
                order_id=booked.order_id,
                **position,
            )
            continue
        if order.status == FAILED and not order.failure_reason:
            found.add(
                "order failed without a reason",
                f"order {booked.order_id}",
                order_id=booked.order_id,
                **position,
            )
        found.outcomes[f"orders.{message.kind}"][order.status.lower()] += 1
        if order.status == PAID and message.kind != DUPLICATE and order.paid_at is not None:
            found.latencies["order produced -> PAID"].append(order.paid_at.timestamp() - message.produced_at)
            found.paid_orders.append((message.produced_at, order.paid_at.timestamp()))
    check_charges(order_rows, charges, found)
    invariants = check_invariants(database)
    for name in (
        "negative_stock_products",
        "paid_without_one_charge",
        "unbalanced_postings",
        "final_orders_with_open_receivable",
    ):
        if getattr(invariants, name):
            found.add(f"ledger invariant: {name}", str(getattr(invariants, name))[:2000])
    if invariants.duplicates_rejected != invariants.duplicates_sent:
        found.add(
            "ledger invariant: duplicates",
            f"{invariants.duplicates_rejected} rejected, {invariants.duplicates_sent} sent",
        )


def check_charges(order_rows: dict[str, Any], charges: list[dict[str, Any]], found: Findings) -> None:
    """Charges at the gateway are exactly the PAID orders, one each."""
    per_order = Counter(str(intent.get("metadata", {}).get("order_id")) for intent in charges)
    for order_id, count in per_order.items():
        if count > 1:
            found.add(
                "order charged twice",
                f"order {order_id}: {count} succeeded payment intents",
                order_id=order_id,
            )
        row = order_rows.get(order_id)
        if row is None or row.status != PAID:
            status = row.status if row is not None else "missing"
            found.add("charge without a PAID order", f"order {order_id} is {status}", order_id=order_id)
    for order_id, row in order_rows.items():
        if row.status == PAID and per_order.get(order_id, 0) == 0:
            found.add("PAID order never charged", f"order {order_id}", order_id=order_id)
    found.outcomes["gateway"]["succeeded_charges"] = len(charges)


def check_events(
    warehouse_rows: dict[str, int],
    warehouse_minutes: dict[str, int],
    dead_lettered: set[tuple[int, int]],
    redis_minutes: dict[str, int],
    produced: Produced,
    found: Findings,
) -> None:
    valid = {m.event_id for m in produced.events if m.kind in (VALID, LATE) and m.event_id}
    for event_id in sorted(valid):
        copies = warehouse_rows.get(event_id, 0)
        if copies != 1:
            found.add("event not stored exactly once", f"event {event_id}: {copies} rows", event_id=event_id)
    for message in produced.events:
        found.outcomes[f"events.{message.kind}"]["produced"] += 1
        if message.kind == MALFORMED and (message.partition, message.offset) not in dead_lettered:
            found.add(
                "malformed event not dead-lettered",
                f"events {message.partition}:{message.offset}",
                partition=message.partition,
                offset=message.offset,
            )
    unexpected = set(warehouse_rows) - valid
    if unexpected:
        found.add(
            "warehouse holds events nobody sent", f"{len(unexpected)} ids", sample=sorted(unexpected)[:5]
        )
    for minute in sorted(set(warehouse_minutes) | set(redis_minutes)):
        stored, counted = warehouse_minutes.get(minute, 0), redis_minutes.get(minute, 0)
        if stored != counted:
            found.add(
                "Redis count differs from the warehouse",
                f"minute {minute}: Redis {counted}, warehouse {stored}",
                minute=minute,
            )


def check_uploads(database: PostgresDatabase, s3: Any, produced: Produced, found: Findings) -> set[str]:
    """Returns the partitions whose upload was refused (quarantined or rejected): their runs fail by design."""
    media = MediaSettings()
    refused: set[str] = set()
    with database.transaction() as connection:
        uploads = {row.object_key: row for row in connection.execute(sa.select(media_uploads))}
        published = {row.partition_key: row for row in connection.execute(sa.select(media_publications))}
        variants: dict[str, list[Any]] = defaultdict(list)
        for variant in connection.execute(sa.select(media_variants)):
            variants[variant.partition_key].append(variant)
    for upload in produced.uploads:
        row = uploads.get(upload.key)
        if row is None:
            found.add("upload never registered", upload.key, key=upload.key)
            continue
        found.outcomes[f"uploads.{upload.kind}"][row.status] += 1
        if row.status in ("quarantined", "rejected"):
            refused.add(row.partition_key)
            if not row.status_reason:
                found.add(f"upload {row.status} without a reason", upload.key, key=upload.key)
            if upload.kind in (IMAGE, PDF):
                found.add(f"good upload {row.status}", f"{upload.key}: {row.status_reason}", key=upload.key)
            continue
        if row.status != "published":
            found.add("upload not final", f"{upload.key} is {row.status}", key=upload.key)
            continue
        if upload.kind in (INFECTED,):
            found.add("infected upload published", upload.key, key=upload.key)
        publication = published.get(row.partition_key)
        if publication is None or not variants[row.partition_key]:
            found.add("published upload without a publication record", upload.key, key=upload.key)
            continue
        found.latencies["uploaded -> published"].append(
            publication.published_at.timestamp() - upload.uploaded_at
        )
        for variant in variants[row.partition_key]:
            for bucket in [media.origin_bucket, *media.region_buckets.values()]:
                try:
                    data = s3.get_object(Bucket=bucket, Key=variant.key)["Body"].read()
                except Exception as missing:
                    found.add(
                        "published variant missing", f"{bucket}/{variant.key}: {missing}", key=upload.key
                    )
                    continue
                if hashlib.sha256(data).hexdigest() not in str(variant.checksum):
                    found.add("published variant bytes differ", f"{bucket}/{variant.key}", key=upload.key)
    return refused


def check_dagster_cursors(
    instance: dg.DagsterInstance, end_offsets: dict[str, dict[int, int]], found: Findings
) -> None:
    cursors = {
        state.instigator_name: TopicCursor.from_json(getattr(state.instigator_data, "cursor", None))
        for state in instance.all_instigator_state()
        if state.instigator_name in TOPIC_SENSORS and state.instigator_data is not None
    }
    for name, topic in TOPIC_SENSORS.items():
        cursor = cursors.get(name, TopicCursor())
        ends = {p: end for p, end in end_offsets[topic].items() if end}
        if cursor.landed != ends or cursor.pending_run_key is not None:
            found.add(
                "sensor cursor not at the topic end",
                f"{name}: landed {cursor.landed}, ends {ends}",
                sensor=name,
            )


def check_run_failures(
    instance: dg.DagsterInstance,
    injected: list[Fault],
    killed_runs: set[str],
    refused_uploads: set[str],
    found: Findings,
) -> None:
    """No run failed twice for the same cause, leaving out the failures the nemesis caused (the runs it
    killed, the runs that ended within a minute after a fault to a service they use) and the media
    runs of refused uploads, which fail their partition by design."""
    service_faults = [fault.at for fault in injected if not fault.kind.startswith("gateway")]
    causes: Counter[tuple[str, str]] = Counter()
    for record in instance.get_run_records():
        run = record.dagster_run
        found.outcomes["runs"][f"{run.job_name} {run.status.value}"] += 1
        if record.start_time and record.end_time:
            requested = record.create_timestamp.timestamp()
            found.run_phases[f"{run.job_name} requested -> executing"].append(record.start_time - requested)
            found.run_phases[f"{run.job_name} executing"].append(record.end_time - record.start_time)
        if run.status != dg.DagsterRunStatus.FAILURE:
            continue
        if run.tags.get("dagster/partition") in refused_uploads:
            found.outcomes["failed runs (upload refused)"][run.job_name] += 1
            continue
        cause = failure_cause(run_error(instance, run.run_id))
        ended = record.end_time or time.time()
        injured = run.run_id in killed_runs or any(at - 5 <= ended <= at + 60 for at in service_faults)
        found.outcomes["failed runs (nemesis)" if injured else "failed runs"][
            f"{run.job_name}: {cause}"[:200]
        ] += 1
        if not injured:
            causes[(run.job_name, cause)] += 1
    for (job, cause), count in causes.items():
        if count > 1:
            found.add(
                "runs failed twice for the same cause", f"{job}: {cause} ({count} runs)", job=job, cause=cause
            )


def pii_hits(canaries: Iterable[Canary], haystacks: Iterable[tuple[str, bytes]], found: Findings) -> None:
    for where, data in haystacks:
        for canary in canaries:
            hits = canary.hits(data)
            if hits:
                found.add(
                    "canary PII stored in plaintext",
                    where,
                    store=where,
                    needle=hits[0].decode(errors="replace"),
                )


def postgres_dump(pg_dump: Path, url: str) -> bytes:
    done = subprocess.run([str(pg_dump), "--data-only", url], capture_output=True, check=True)
    return done.stdout


def redis_values(client: redis.Redis) -> bytes:
    values = []
    for key in client.scan_iter(count=1000):
        values.append(key)
        dumped = client.dump(key)
        if isinstance(dumped, bytes):
            values.append(dumped)
    return b"\n".join(values)


def folder_files(root: Path) -> Iterable[tuple[str, bytes]]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield str(path), path.read_bytes()


def first_run_start(instance: dg.DagsterInstance, job_name: str) -> float:
    """When the first run of `job_name` started executing (inf if none did)."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name))
    return min((r.start_time for r in records if r.start_time is not None), default=float("inf"))


def paid_once_orders_ran(instance: dg.DagsterInstance, found: Findings) -> None:
    """Produced -> PAID of the orders produced once the deployment's first orders run was executing.
    The ones before waited for the deployment's cold start (its first sensor tick and first run launch,
    beside every other workflow's), which a long-lived deployment pays once; bench/freshness.py counts
    its cold start apart the same way. Both figures are reported."""
    started = first_run_start(instance, "orders_pipeline")
    for produced_at, paid_at in found.paid_orders:
        if produced_at >= started:
            found.latencies["order produced -> PAID, after the first orders run started"].append(
                paid_at - produced_at
            )


def event_latencies(instance: dg.DagsterInstance, produced: Produced, found: Findings) -> None:
    """Produced -> landed (in raw_events, its minute rollup and the Redis counters, written together):
    the first landing materialization whose ranges cover the event's offset. The events produced once
    the first landing run was executing are reported apart as well (see `paid_once_orders_ran`)."""
    landings: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    records: list[dg.EventLogRecord] = []
    cursor: str | None = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["analytics", "raw_events"])),
            limit=1000,
            cursor=cursor,
        )
        records += page.records
        if not page.has_more:
            break
        cursor = page.cursor
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("ranges") if materialization else None
        text = value.value if isinstance(value, dg.TextMetadataValue) else ""
        if text and text != "none":
            for landed in parse_ranges(text):
                landings[landed.partition].append((record.timestamp, landed.start, landed.end))
    for spans in landings.values():
        spans.sort()
    warm_from = first_run_start(instance, "analytics_pipeline")
    for message in produced.events:
        if message.kind not in (VALID, LATE):
            continue
        for at, start, end in landings.get(message.partition, []):
            if start <= message.offset < end:
                latency = at - message.produced_at
                found.latencies["event produced -> warehouse and Redis"].append(latency)
                if message.produced_at >= warm_from:
                    found.latencies[
                        "event produced -> warehouse and Redis, after the first landing run started"
                    ].append(latency)
                break


def warehouse_facts(
    path: Path,
) -> tuple[dict[str, int], set[tuple[int, int]], dict[str, int], list[datetime]]:
    """Rows per event id, dead-lettered positions, rows per minute, and the hours that hold events."""
    warehouse = ChdbWarehouse(path=str(path))
    tables = configured_tables()
    try:
        ids = warehouse.query_arrow(
            f"SELECT event_id, count() AS n FROM {tables.raw_events} GROUP BY event_id"
        )
        dead = warehouse.query_arrow(
            f"SELECT partition, offset FROM {tables.dead_letters} WHERE topic = {{topic:String}}",
            {"topic": settings.EVENTS_TOPIC},
        )
        hours = warehouse.query_arrow(
            f"SELECT DISTINCT toUnixTimestamp(toStartOfHour(ts)) AS hour FROM {tables.raw_events}"
        )
        hour_list = [datetime.fromtimestamp(int(h), UTC) for h in hours.column("hour").to_pylist()]
        minutes: dict[str, int] = {}
        for hour in hour_list:
            minutes.update(events_per_minute_in_warehouse(warehouse, tables, hour))
    finally:
        warehouse.close()
    rows = dict(zip(ids.column("event_id").to_pylist(), map(int, ids.column("n").to_pylist()), strict=True))
    positions = set(zip(dead.column("partition").to_pylist(), dead.column("offset").to_pylist(), strict=True))
    return rows, positions, minutes, hour_list


def check_pii(deployment: Deployment, canaries: list[Canary], found: Findings) -> int:
    """Searches every store for the canaries: both PostgreSQL databases dumped, every Redis value, the
    bytes S3 and the warehouse keep on disk, Dagster's home (compute logs) and the processes' logs."""
    services = deployment.services
    server = services.postgres.server
    # The server's own version (Debian's /usr/bin/pg_dump is a wrapper choosing one).
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    pg_dump = Path(versioned[-1] if versioned else shutil.which("pg_dump") or "pg_dump")
    haystacks: list[tuple[str, bytes]] = [
        (
            "postgres hub",
            postgres_dump(
                pg_dump, server.sqlalchemy_url("psycopg").replace("postgresql+psycopg", "postgresql")
            ),
        ),
        (
            "postgres dagster",
            postgres_dump(
                pg_dump,
                server.with_database("dagster")
                .sqlalchemy_url("psycopg")
                .replace("postgresql+psycopg", "postgresql"),
            ),
        ),
        ("redis", redis_values(services.redis.client())),
    ]
    searched = len(haystacks)
    pii_hits(canaries, haystacks, found)
    folders = [services.s3.data_folder, deployment.warehouse_path, deployment.dagster_home]
    for folder in folders:
        if folder is None:
            continue
        for where, data in folder_files(folder):
            searched += 1
            pii_hits(canaries, [(where, data)], found)
    for log in deployment.root.glob("*.log"):
        searched += 1
        pii_hits(canaries, [(str(log), log.read_bytes())], found)
    return searched


def check_everything(
    deployment: Deployment,
    instance: dg.DagsterInstance,
    produced: Produced,
    injected: list[Fault],
    killed_runs: set[str],
    ends: dict[str, dict[int, int]],
) -> Findings:
    services = deployment.services
    found = Findings()
    database = PostgresDatabase(url=services.postgres.server.url, migrate_schema=False)
    refused: set[str] = set()

    def orders_and_uploads() -> None:
        nonlocal refused
        check_orders(database, produced, services.apis.stripe.succeeded_intents(), found)
        check_confirmations(database, services.apis, found)
        refused = check_uploads(database, services.s3.client(), produced, found)

    def events() -> None:
        rows, dead, warehouse_minutes, hours = warehouse_facts(deployment.warehouse_path)
        cache = RedisCache(url=services.redis.url)
        redis_minutes: dict[str, int] = {}
        for hour in hours:
            redis_minutes.update(events_per_minute_from_cache(cache, hour))
        check_events(rows, warehouse_minutes, dead, redis_minutes, produced, found)

    def pii() -> None:
        found.outcomes["pii"]["haystacks searched"] = check_pii(deployment, produced.canaries, found)

    sections: list[tuple[str, Callable[[], None]]] = [
        ("orders and uploads", orders_and_uploads),
        ("events", events),
        ("sensor cursors", lambda: check_dagster_cursors(instance, ends, found)),
        ("run failures", lambda: check_run_failures(instance, injected, killed_runs, refused, found)),
        ("event latencies", lambda: event_latencies(instance, produced, found)),
        ("order latencies", lambda: paid_once_orders_ran(instance, found)),
        ("canary PII", pii),
    ]
    try:
        for name, section in sections:
            try:
                section()
            except Exception as failure:
                # A check that could not be made proves nothing: it counts against the run.
                found.add("check could not be made", f"{name}: {type(failure).__name__}: {failure}"[:1000],
                          traceback=traceback.format_exc()[-2000:])  # fmt: skip
    finally:
        database.dispose()
    return found
