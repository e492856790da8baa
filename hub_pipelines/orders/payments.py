"""The payment gateway interface the ledger charges through (Stripe in production, a fake locally).

A charge is keyed by the order id: the gateway must treat a repeated charge with the same key as the
same charge (Stripe's idempotency keys do), which is what makes reconciliation safe: asking again
with the same key either returns the recorded outcome or makes the one and only charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

PAID: Final = "paid"
DECLINED: Final = "declined"


@dataclass(frozen=True)
class ChargeRequest:
    order_id: str
    amount_minor: int
    currency: str
    customer_id: str
    payment_method: str | None = None

    @property
    def idempotency_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class ChargeResult:
    """A definitive answer from the gateway: the money moved, or it never will for this attempt."""

    outcome: Literal["paid", "declined"]
    reference: str | None
    reason: str | None = None
    attempts: int = 1


class PaymentOutcomeUnknown(Exception):
    """The charge may or may not have happened (a timeout after sending, repeated 5xx, a concurrent
    request with the same key): the order waits in PAYMENT_UNKNOWN and is reconciled with the same key."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class ChargeOutcomeHidden(PaymentOutcomeUnknown):
    """The gateway keeps replaying a server error it saved for the order's key after it began executing,
    and finding the charge by the order id turned up none (yet: the gateway's search may lag). The
    order waits in PAYMENT_UNKNOWN and an operator is paged; only the same key is ever sent again, so
    the order is charged at most once."""


class GatewayUnavailable(Exception):
    """The charge was certainly not attempted (the circuit is open): the order stays RESERVED for later."""


class PaymentGateway(Protocol):
    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once per key; raises PaymentOutcomeUnknown or GatewayUnavailable when not definitive."""
        ...

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        """The final outcome of a charge already made for the order, found by its order id; None when
        the gateway shows none. Raises PaymentOutcomeUnknown when it cannot tell."""
        ...

    def breaker_state(self) -> str:
        """'closed', 'open' or 'half-open'."""
        ...
