"""A second run process for the order tests, driven over stdin/stdout (no sleeps, no shared memory).

python -m tests.orders.worker_process crash-after-charge <database url> <stripe base url>
    processes the inbox and SIGKILLs itself right after the first successful charge, before PAID
    is committed.
python -m tests.orders.worker_process breaker <redis url> <breaker name> <stripe base url>
    for each stdin line, makes one charge and prints its outcome and the breaker state.
python -m tests.orders.worker_process ledger <database url> <stripe base url> <redis url> <namespace> <rate> <kill after>
    prints "ready", waits for a line on stdin, then runs one batch with the per-customer rate limit
    in Redis; SIGKILLs itself right after its <kill after>-th successful charge (0: never), else
    prints the batch's counts.
python -m tests.orders.worker_process lane <database url> <stripe base url> <redis url> <namespace> <rate> <bootstrap> <topic> <lane> <lanes>
    prints "ready", waits for a line on stdin, then lands the lane's partitions of the Kafka topic
    `LANE_CHUNK` offsets at a time, running a ledger batch over the lane after each, as the lane's
    runs would; prints the summed counts.
python -m tests.orders.worker_process page-overdue <database url> <bound s>
    prints "ready", waits for a line on stdin, then pages the overdue orders (`page_overdue_payments`,
    the local pager) as a lane's ledger step does after its batch; prints {order id: 1} of those it paged.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import uuid
from collections import Counter

from hub_pipelines.core.ports import ChargeRequest, ChargeResult, GatewayUnavailable, PaymentOutcomeUnknown
from hub_pipelines.core.rate_limit import RateLimiter
from hub_pipelines.landing.lanes import Lane
from hub_pipelines.landing.offsets import plan_next_ranges
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import land_ranges, split_into_chunks
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.overdue_payments import page_overdue_payments
from hub_pipelines.orders.processing import OrderBatchProcessor
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.notifier import LogNotifier
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.support import authenticator


class KillAfterCharge:
    def __init__(self, gateway: StripeGateway, charges: int = 1) -> None:
        self.gateway = gateway
        self.left = charges
        self.lock = threading.Lock()

    def charge(self, request: ChargeRequest) -> ChargeResult:
        result = self.gateway.charge(request)
        with self.lock:
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        return self.gateway.find_charge(request)

    def breaker_state(self) -> str:
        return self.gateway.breaker_state()


def crash_after_charge(database_url: str, stripe_base: str) -> None:
    database = PostgresDatabase(url=database_url)
    gateway = StripeGateway(
        api_key="sk_test_hub", api_base=stripe_base, initial_backoff_s=0, backoff_jitter_s=0
    )
    ledger = OrderBatchProcessor(
        database,
        Catalog(database),
        KillAfterCharge(gateway),
        authenticator(),
        min_in_flight=1,
        max_in_flight=1,
    )
    ledger.process_batch()


def ledger(
    database_url: str, stripe_base: str, redis_url: str, namespace: str, rate: str, kill_after: str
) -> None:
    database = PostgresDatabase(url=database_url, pool_size=12, max_overflow=8)
    gateway = StripeGateway(
        api_key="sk_test_hub", api_base=stripe_base, initial_backoff_s=0, backoff_jitter_s=0,
        breaker_name=f"stripe-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    order_ledger = OrderBatchProcessor(
        database,
        Catalog(database),
        KillAfterCharge(gateway, int(kill_after)) if int(kill_after) else gateway,
        authenticator(),
        rate_limiter=RateLimiter(rate, redis_url, namespace=namespace),
        max_in_flight=4,
    )
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(order_ledger.process_batch().counts), flush=True)


LANE_CHUNK = 10


def lane(
    database_url: str,
    stripe_base: str,
    redis_url: str,
    namespace: str,
    rate: str,
    bootstrap: str,
    topic: str,
    index: str,
    count: str,
) -> None:
    database = PostgresDatabase(url=database_url, pool_size=12, max_overflow=8)
    topics = KafkaTopics(bootstrap_servers=bootstrap)
    gateway = StripeGateway(
        api_key="sk_test_hub", api_base=stripe_base, initial_backoff_s=0, backoff_jitter_s=0,
        breaker_name=f"stripe-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    own = Lane(topic, int(index), int(count))
    order_ledger = OrderBatchProcessor(
        database,
        Catalog(database),
        gateway,
        authenticator(),
        rate_limiter=RateLimiter(rate, redis_url, namespace=namespace),
        topic=topic,
        lane=own.index,
        lanes=own.count,
        max_in_flight=4,
    )
    ranges = [r for r in plan_next_ranges({}, topics.end_offsets(topic), 1_000_000) if own.holds(r.partition)]
    chunks = [chunk for r in ranges for chunk in split_into_chunks(r, LANE_CHUNK)]
    print("ready", flush=True)
    sys.stdin.readline()
    counts: Counter[str] = Counter()
    for chunk in chunks:
        land_ranges(topics, SqlInboxSink(database), topic, [chunk], f"lane-{own.name}", LANE_CHUNK)
        counts.update(order_ledger.process_batch().counts)
    print(json.dumps(counts), flush=True)


def breaker(redis_url: str, name: str, stripe_base: str) -> None:
    gateway = StripeGateway(
        api_key="sk_test_hub",
        api_base=stripe_base,
        attempts=1,
        breaker_redis_url=redis_url,
        breaker_name=name,
        call_timeout_s=2.0,
    )
    for _ in sys.stdin:
        try:
            outcome = gateway.charge(ChargeRequest(str(uuid.uuid4()), 100, "USD", "c-9")).outcome
        except GatewayUnavailable:
            outcome = "unavailable"
        except PaymentOutcomeUnknown:
            outcome = "unknown"
        print(outcome, gateway.breaker_state(), flush=True)


def page_overdue(database_url: str, bound_s: str) -> None:
    database = PostgresDatabase(url=database_url)
    print("ready", flush=True)
    sys.stdin.readline()
    paged = page_overdue_payments(database, LogNotifier(), float(bound_s))
    print(json.dumps({overdue.order_id: 1 for overdue in paged}), flush=True)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    commands = {
        "crash-after-charge": crash_after_charge,
        "breaker": breaker,
        "ledger": ledger,
        "lane": lane,
        "page-overdue": page_overdue,
    }
    commands[command](*arguments)
