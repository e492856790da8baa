"""The payment gateway: an approving fake for local runs, Stripe (PaymentIntents) in production.

Both implement `hub_pipelines.core.ports.PaymentGateway`. Stripe calls carry the order id as the
idempotency key, time out after `call_timeout_s`, are retried (core.retry: 3 tries, 1 s -> 2 s -> 4 s
with jitter) only for timeouts, connection failures, 409 (same key in flight), 429 and 5xx, and run
through a circuit breaker whose state is shared in Redis by every run process. The SDK's own retries
are off, so the retry policy is the only one.

Stripe saves a key's response once the endpoint has begun executing, 500s included, and replays it
(`Idempotent-Replayed: true`) for 24 h: a replayed 5xx is not retried (it would only replay again)
and the charge is looked up by the order id instead (the search API, whose index may lag by up to a
minute, an hour in an outage). Not found is not proof of no charge: the outcome stays unknown.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import (
    DECLINED,
    PAID,
    ChargeOutcomeHidden,
    ChargeRequest,
    ChargeResult,
    GatewayUnavailable,
    PaymentOutcomeUnknown,
)
from hub_pipelines.core.retry import RetryPolicy

# stripe, redis (through pybreaker too) and pycurl load with the first Stripe call: local runs use the
# approving gateway and never import them.
if TYPE_CHECKING:
    import redis
    import stripe

    from hub_pipelines.core.breaker import Breaker

RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class ApprovingLocalGateway(dg.ConfigurableResource):
    """LOCAL ONLY: a fake gateway in this process that approves every charge, no money involved.

    The reference is derived from the order id, so asking twice answers the same, like an
    idempotent gateway would.
    """

    reference_prefix: str = "local_pi_"

    def charge(self, request: ChargeRequest) -> ChargeResult:
        digest = hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:24]
        return ChargeResult(PAID, self.reference_prefix + digest)

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        # Nothing is kept between calls; `charge` answers the same for the same key anyway.
        return None

    def breaker_state(self) -> str:
        return "closed"


def is_retryable_stripe_error(error: BaseException) -> bool:
    """Failures that may pass when the same request (same idempotency key) is sent again."""
    import stripe

    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if isinstance(error, stripe.APIError) and not is_replayed(error):
        return (error.http_status or 500) in RETRYABLE_STATUSES or (error.http_status or 500) >= 500
    return False


def is_replayed(error: BaseException) -> bool:
    """A response Stripe saved for the key earlier and sent again: the same key will only replay it."""
    headers = getattr(error, "headers", None) or {}
    return str(headers.get("Idempotent-Replayed", "")).lower() == "true"


def _search_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_callers_fault(error: BaseException) -> bool:
    # A decline or a bad request says nothing about the gateway's health: it must not open the circuit.
    import stripe

    return isinstance(error, stripe.StripeError) and not is_retryable_stripe_error(error)


class StripeGateway(dg.ConfigurableResource):
    """Stripe PaymentIntents, created and confirmed in one call, one PaymentIntent per order."""

    api_key: str
    api_base: str | None = None
    default_payment_method: str = "pm_card_visa"
    call_timeout_s: float = 3.0
    attempts: int = 3
    initial_backoff_s: float = 1.0
    backoff_jitter_s: float = 1.0
    breaker_redis_url: str | None = None
    breaker_name: str = "stripe"
    breaker_key_prefix: str = "hub:"
    breaker_fail_max: int = 5
    breaker_reset_s: float = 60.0

    max_connections: int = 128

    _local: threading.local = PrivateAttr(default_factory=threading.local)
    _stripe: stripe.StripeClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _redis: redis.Redis | None = PrivateAttr(default=None)
    _redis_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _policy: RetryPolicy | None = PrivateAttr(default=None)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        import stripe

        from hub_pipelines.core.breaker import CircuitOpenError

        breaker = self._breaker()
        sent = 0

        def send() -> Any:
            nonlocal sent
            sent += 1
            return self._create_intent(request)

        def attempt() -> Any:
            return breaker.call(send)

        try:
            intent = self._retry_policy().call(attempt)
        except stripe.CardError as declined:
            body: dict[str, Any] = declined.json_body if isinstance(declined.json_body, dict) else {}
            reference = ((body.get("error") or {}).get("payment_intent") or {}).get("id")
            reason = declined.user_message or declined.code or "card declined"
            return ChargeResult(DECLINED, reference, reason=str(reason), attempts=max(sent, 1))
        except CircuitOpenError as refused:
            if not sent:
                raise GatewayUnavailable(f"order {request.order_id}: {refused}") from refused
            raise PaymentOutcomeUnknown(
                f"order {request.order_id}: circuit opened after {sent} attempt(s): {refused}", sent
            ) from refused
        except stripe.StripeError as failed:
            if is_replayed(failed) and (failed.http_status or 0) >= 500:
                return self._outcome_behind_replayed_error(request, failed, max(sent, 1))
            raise PaymentOutcomeUnknown(
                f"order {request.order_id}: stripe gave no definitive answer after {sent} attempt(s): "
                f"{type(failed).__name__} (HTTP {failed.http_status}): {failed.user_message or failed}",
                sent,
            ) from failed
        return self._result_of(request, intent, max(sent, 1))

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        """The PaymentIntent made for the order (by `metadata.order_id`), if the search shows one.

        A succeeded one wins over others (there should be one only); a declined one is a decline. Through
        the circuit breaker: while it is open, GatewayUnavailable."""
        import stripe

        from hub_pipelines.core.breaker import CircuitOpenError

        def search() -> Any:
            return self._client().raw_request(
                "get",
                "/v1/payment_intents/search",
                query=f"metadata['order_id']:{_search_literal(request.order_id)}",
                limit=100,
            )

        try:
            response = self._breaker().call(search)
        except CircuitOpenError as refused:
            raise GatewayUnavailable(f"order {request.order_id}: {refused}") from refused
        except stripe.StripeError as failed:
            raise PaymentOutcomeUnknown(
                f"order {request.order_id}: looking its payment intent up failed: "
                f"{type(failed).__name__} (HTTP {failed.http_status}): {failed.user_message or failed}"
            ) from failed
        intents = [dict(intent) for intent in response.data.get("data") or []]
        if not intents:
            return None
        intents.sort(key=lambda intent: intent.get("status") != "succeeded")
        return self._result_of(request, intents[0], 0)

    def breaker_state(self) -> str:
        return self._breaker().state

    def _outcome_behind_replayed_error(
        self, request: ChargeRequest, replayed: stripe.StripeError, attempts: int
    ) -> ChargeResult:
        try:
            found = self.find_charge(request)
        except GatewayUnavailable as refused:
            # The charge itself was sent: its outcome is unknown, not certainly unattempted.
            raise PaymentOutcomeUnknown(str(refused), attempts) from refused
        if found is not None:
            return ChargeResult(found.outcome, found.reference, found.reason, attempts)
        raise ChargeOutcomeHidden(
            f"order {request.order_id}: stripe replays HTTP {replayed.http_status} saved for its "
            f"idempotency key after execution began, and no payment intent for the order is found yet; "
            f"left PAYMENT_UNKNOWN for the same key: {replayed.user_message or replayed}",
            attempts,
        ) from replayed

    def _result_of(self, request: ChargeRequest, intent: dict[str, Any], attempts: int) -> ChargeResult:
        status = intent.get("status")
        if status == "succeeded":
            return ChargeResult(PAID, intent.get("id"), attempts=attempts)
        if status in ("requires_payment_method", "canceled"):
            error = intent.get("last_payment_error") or {}
            reason = error.get("message") or f"payment intent {status}"
            return ChargeResult(DECLINED, intent.get("id"), reason=str(reason), attempts=attempts)
        raise PaymentOutcomeUnknown(
            f"order {request.order_id}: payment intent {intent.get('id')} is {status!r}, not final", attempts
        )

    def _create_intent(self, request: ChargeRequest) -> dict[str, Any]:
        # raw_request: the SDK's own request, error mapping and idempotency handling, but the answer
        # stays the decoded JSON instead of a tree of StripeObjects (~0.25 ms of CPU less per call).
        response = self._client().raw_request(
            "post",
            "/v1/payment_intents",
            amount=request.amount_minor,
            currency=request.currency.lower(),
            confirm=True,
            payment_method=request.payment_method or self.default_payment_method,
            automatic_payment_methods={"enabled": True, "allow_redirects": "never"},
            metadata={"order_id": request.order_id, "customer_id": request.customer_id},
            idempotency_key=request.idempotency_key,
        )
        return dict(response.data)

    def _retry_policy(self) -> RetryPolicy:
        # Built once: the settings are fixed, and the policy keeps no state between calls.
        if self._policy is None:
            self._policy = RetryPolicy(
                attempts=self.attempts,
                initial_wait=self.initial_backoff_s,
                jitter=self.backoff_jitter_s,
                retry_on=(is_retryable_stripe_error,),
            )
        return self._policy

    def _client(self) -> stripe.StripeClient:
        # One client for every thread: its pool of curl handles keeps their connections alive, so
        # calls reuse a warm connection instead of paying a TCP (and TLS) handshake each.
        import stripe

        from hub_pipelines.resources.orders.stripe_transport import (
            CurlClient,
            format_sdk_log_lines_only_when_wanted,
        )

        with self._client_lock:
            if self._stripe is None:
                format_sdk_log_lines_only_when_wanted()
                base = {"api": self.api_base} if self.api_base else None
                self._stripe = stripe.StripeClient(
                    self.api_key,
                    base_addresses=base,  # type: ignore[arg-type]
                    http_client=CurlClient(self.call_timeout_s, self.max_connections),
                    max_network_retries=0,
                )
            return self._stripe

    def _breaker(self) -> Breaker:
        # pybreaker serialises calls through one breaker object; each thread gets its own, and they
        # share their state through Redis (or the process's memory storage of the same name).
        breaker = getattr(self._local, "breaker", None)
        if breaker is None:
            from hub_pipelines.core.breaker import make_breaker

            breaker = make_breaker(
                self.breaker_name,
                self._redis_client(),
                fail_max=self.breaker_fail_max,
                reset_timeout=self.breaker_reset_s,
                call_timeout=self.call_timeout_s,
                exclude=[_is_callers_fault],
                key_prefix=self.breaker_key_prefix,
            )
            self._local.breaker = breaker
        return breaker

    def _redis_client(self) -> redis.Redis | None:
        if not self.breaker_redis_url:
            return None
        import redis

        with self._redis_lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    self.breaker_redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
                )
            return self._redis
