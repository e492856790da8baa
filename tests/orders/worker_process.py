"""A second run process for the order tests, driven over stdin/stdout (no sleeps, no shared memory).

python -m tests.orders.worker_process crash-after-charge <database url> <stripe base url>
    processes the inbox and SIGKILLs itself right after the first successful charge, before PAID
    is committed.
python -m tests.orders.worker_process breaker <redis url> <breaker name> <stripe base url>
    for each stdin line, makes one charge and prints its outcome and the breaker state.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid

from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.payments import (
    ChargeRequest,
    ChargeResult,
    GatewayUnavailable,
    PaymentOutcomeUnknown,
)
from hub_pipelines.orders.processing import OrderLedger
from hub_pipelines.resources.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.support import authenticator


class KillAfterCharge:
    def __init__(self, gateway: StripeGateway) -> None:
        self.gateway = gateway

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.gateway.charge(request)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    def breaker_state(self) -> str:
        return self.gateway.breaker_state()


def crash_after_charge(database_url: str, stripe_base: str) -> None:
    database = PostgresDatabase(url=database_url)
    gateway = StripeGateway(
        api_key="sk_test_hub", api_base=stripe_base, initial_backoff_s=0, backoff_jitter_s=0
    )
    ledger = OrderLedger(
        database,
        Catalog(database),
        KillAfterCharge(gateway),
        authenticator(),
        min_in_flight=1,
        max_in_flight=1,
    )
    ledger.process_batch()


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


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"crash-after-charge": crash_after_charge, "breaker": breaker}[command](*arguments)
