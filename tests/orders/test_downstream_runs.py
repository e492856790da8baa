"""The work after the ledger in runs of its own: the downstream sensor asks for a run once the ledger has
booked a batch since the previous one, and none otherwise; two such runs overlapping in two processes
send each confirmation once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from hub_pipelines.landing.batches import PendingRun, RunOutcome
from hub_pipelines.orders.downstream_runs import (
    RETRY_AFTER_FAILURE_SECONDS,
    DownstreamCursor,
    next_downstream_step,
)
from hub_pipelines.orders.pii import PiiCipher, new_key_setting
from hub_pipelines.orders.tables import notification_log, orders
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.fakes.sms_server import FakeSms
from tests.ops.conftest import (
    DOWNSTREAM_JOB,
    DOWNSTREAM_SENSOR,
    feeder,
    orders_environment,
    run_orders_pipeline,
)
from tests.orders.conftest import Mailbox, ProcessorFactory
from tests.orders.support import Inbox, order_event
from tests.platform.conftest import LocalEnvironment

__all__ = ["orders_environment"]

DONE = PendingRun(RunOutcome.SUCCEEDED)


def test_a_run_is_asked_for_only_when_the_ledger_booked_a_batch_since_the_last_one() -> None:
    first = next_downstream_step(DownstreamCursor(), 7, PendingRun(RunOutcome.MISSING), now=100.0)
    assert first.run_key == "orders-downstream/7"

    assert next_downstream_step(first.cursor, 7, DONE, now=200.0).run_key is None
    assert next_downstream_step(first.cursor, 9, PendingRun(RunOutcome.IN_FLIGHT), now=200.0).run_key is None
    assert next_downstream_step(first.cursor, 9, DONE, now=200.0).run_key == "orders-downstream/9"
    assert next_downstream_step(DownstreamCursor(), None, DONE, now=100.0).run_key is None


def test_a_failed_run_is_asked_for_again_after_the_backoff_even_when_the_ledger_is_quiet() -> None:
    requested = next_downstream_step(DownstreamCursor(), 7, DONE, now=100.0).cursor
    failed = PendingRun(RunOutcome.FAILED, "PostgreSQL went away")

    waiting = next_downstream_step(requested, 7, failed, now=100.0 + RETRY_AFTER_FAILURE_SECONDS / 2)
    again = next_downstream_step(requested, 7, failed, now=100.0 + RETRY_AFTER_FAILURE_SECONDS)

    assert waiting.run_key is None and "PostgreSQL went away" in waiting.reason
    assert again.run_key == "orders-downstream/7#1"
    assert next_downstream_step(again.cursor, 7, failed, now=1000.0).run_key == "orders-downstream/7#2"


def confirmations(env: LocalEnvironment) -> Counter[str]:
    lines = (env.data_dir / "notifications.jsonl").read_text().splitlines()
    return Counter(json.loads(line)["channel"] for line in lines)


def test_downstream_sensor_requests_a_run_after_each_ledger_batch_and_none_without_one(
    orders_environment: LocalEnvironment,
) -> None:
    env = orders_environment
    before, cursor = env.tick(DOWNSTREAM_SENSOR, None)
    assert isinstance(before, dg.SkipReason)

    feeder(env).send_orders(3)
    run_orders_pipeline(env, downstream=False)
    assert not (env.data_dir / "notifications.jsonl").exists()
    requested, cursor = env.tick(DOWNSTREAM_SENSOR, cursor)
    assert isinstance(requested, dg.SensorResult) and requested.run_requests
    [request] = requested.run_requests
    assert env.run(DOWNSTREAM_SENSOR, DOWNSTREAM_JOB, request).success
    assert confirmations(env) == {"email": 3, "sms": 3}

    quiet, cursor = env.tick(DOWNSTREAM_SENSOR, cursor)
    assert isinstance(quiet, dg.SkipReason), quiet

    env.demo_feeder(seed=12).send_orders(2)
    run_orders_pipeline(env, downstream=False)
    again, _ = env.tick(DOWNSTREAM_SENSOR, cursor)
    assert isinstance(again, dg.SensorResult) and again.run_requests
    assert env.run(DOWNSTREAM_SENSOR, DOWNSTREAM_JOB, again.run_requests[0]).success
    assert confirmations(env) == {"email": 5, "sms": 5}


def delivery_run(
    database: PostgresDatabase, smtp_port: int, sms: FakeSms, pii_keys: str
) -> subprocess.Popen[str]:
    url = database.engine.url.render_as_string(hide_password=False)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.orders.delivery_worker", url, str(smtp_port), sms.base_url,
         sms.account_sid, sms.auth_token, pii_keys],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    return worker


def say(worker: subprocess.Popen[str], line: str) -> None:
    assert worker.stdin is not None
    worker.stdin.write(line + "\n")
    worker.stdin.flush()


def test_two_overlapping_delivery_runs_in_two_processes_send_each_confirmation_once(
    ledger_database: PostgresDatabase,
    make_processor: ProcessorFactory,
    smtp_server: tuple[Controller, Mailbox],
    sms_server: FakeSms,
) -> None:
    pii_keys = new_key_setting("k1")
    paid = 24
    Inbox(ledger_database).land_events(order_event(customer=f"c-{n}") for n in range(paid))
    make_processor(ApprovingLocalGateway(), cipher=PiiCipher.from_setting(pii_keys)).process_batch()
    controller, mailbox = smtp_server
    runs = [delivery_run(ledger_database, controller.port, sms_server, pii_keys) for _ in range(2)]

    for run in runs:
        say(run, "go")
    # Both runs have claimed and sent a confirmation and hold the rest: they overlap from here on.
    for run in runs:
        assert run.stdout is not None and run.stdout.readline().strip() == "delivering"
    for run in runs:
        say(run, "go on")
    counts: Counter[str] = Counter()
    for run in runs:
        assert run.stdout is not None
        counts.update(json.loads(run.stdout.readline()))
        assert run.wait(timeout=120) == 0

    with ledger_database.transaction() as connection:
        order_ids = connection.execute(sa.select(orders.c.order_id)).scalars().all()
        log = connection.execute(sa.select(notification_log.c.status, notification_log.c.attempts)).all()
    assert counts == {"email_sent": paid, "sms_sent": paid}
    assert len(order_ids) == paid
    bodies = [m.get_payload(decode=True).decode() for m in mailbox.messages]
    emailed = Counter(oid for body in bodies for oid in order_ids if oid in body)
    texted = Counter(oid for m in sms_server.messages for oid in order_ids if oid in m["Body"])
    assert emailed == dict.fromkeys(order_ids, 1)
    assert texted == dict.fromkeys(order_ids, 1)
    assert Counter(log) == {("sent", 1): 2 * paid}
