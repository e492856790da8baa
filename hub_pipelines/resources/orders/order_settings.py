"""The order ledger's own settings: who may place orders, how PII is keyed, how fast customers may order.

One resource in both environments; definitions.py feeds the secrets from the environment in prod and
fixed demo values locally. It builds the domain objects (`EventAuthenticator`, `PiiCipher`,
`RateLimiter`) the assets hand to `hub_pipelines.orders`.
"""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.rate_limit import RateLimiter
from hub_pipelines.orders.authenticity import EventAuthenticator
from hub_pipelines.orders.pii import PiiCipher

_LIMITER_LOCK = threading.Lock()


class OrderLedgerSettings(dg.ConfigurableResource):
    """Authenticity secrets, PII keys, per-customer rate limit and batch sizes of the order ledger."""

    hmac_secret: str | None = None
    jwt_hs256_secret: str | None = None
    jwt_rs256_public_key: str | None = None
    jwt_issuer: str = "hub-checkout"
    jwt_audience: str = "hub-orders"
    pii_keys: str
    rate_limit: str = "30/minute"
    rate_limit_storage_uri: str = "memory://"
    orders_topic: str = "orders"
    order_events_topic: str = "order-events"
    # Bounds of the orders placed at once up to their gateway call's answer; the ledger's limiter
    # moves between them by the call's latency. In flight = orders/s x call time, so Stripe's ~300 ms
    # wants ~100 at 300 orders/s, while a fast gateway leaves the work CPU-bound, where more than a
    # few only queue on the GIL.
    min_in_flight: int = 2
    max_in_flight: int = 256
    batch_limit: int = 20_000
    stale_after_s: float = 60.0
    outbox_bound_s: float = 300.0
    # An order without a payment outcome this long after its reservation fails the ledger's check and
    # pages once. Well above the normal way to an outcome: a RESERVED order waits `stale_after_s` (60 s)
    # before reconciliation takes it, a catch-up run comes HUB_ORDERS_RECONCILE_AFTER_SECONDS (60 s)
    # after the batch on a 30 s sensor tick, an open breaker refuses calls for 60 s at a time, and
    # Stripe's search shows a hidden charge within about a minute. A gateway outage pages by itself
    # (HubCircuitBreakerOpen, after 5 min); this is for the orders that stay open after it, or without one.
    payment_outcome_bound_s: float = 900.0
    notification_max_attempts: int = 3
    # Confirmations sent at once by a downstream run: each message waits on an SMTP connection or an SMS
    # API call, so one at a time spent a batch's seconds waiting; a crash leaves at most this many unsent.
    notification_concurrency: int = 8
    pushgateway_url: str | None = None

    _limiter: RateLimiter | None = PrivateAttr(default=None)

    def authenticator(self) -> EventAuthenticator:
        return EventAuthenticator(
            hmac_secret=self.hmac_secret,
            jwt_hs256_secret=self.jwt_hs256_secret,
            jwt_rs256_public_key=self.jwt_rs256_public_key,
            jwt_issuer=self.jwt_issuer,
            jwt_audience=self.jwt_audience,
        )

    def cipher(self) -> PiiCipher:
        return PiiCipher.from_setting(self.pii_keys)

    def rate_limiter(self) -> RateLimiter:
        with _LIMITER_LOCK:
            if self._limiter is None:
                self._limiter = RateLimiter(
                    self.rate_limit, self.rate_limit_storage_uri, namespace="hub-orders-per-customer"
                )
            return self._limiter
