"""Intake: an order event's bytes become a validated `OrderRequest`, or `InvalidOrderEvent` with the reason.

Money arrives as decimal strings ("12.50") and stays a Decimal until price verification, which
charges the catalog's price in integer minor units; a JSON number for money is refused, since a float
cannot hold 0.10 exactly, and so is an amount outside what a price can be (`1E+999999999` would make
the price check's arithmetic overflow). Text that the ledger stores or sends on must be storable
in PostgreSQL text (no NUL) and printable: control characters are refused in every field.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated

import msgspec

MAX_QUANTITY = 1000
MAX_ITEMS = 100
MAX_PRICE_DIGITS = 12
"""At most this many digits before and after the decimal point of a sent price."""

# ISO 4217 codes the ledger accepts, with their minor-unit exponent.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2,
    "CZK": 2, "NZD": 2, "SGD": 2, "HKD": 2, "MXN": 2, "BRL": 2, "INR": 2, "CNY": 2, "ZAR": 2, "JPY": 0,
    "KRW": 0, "ISK": 0, "HUF": 2, "BHD": 3, "KWD": 3, "JOD": 3, "TND": 3,
}  # fmt: skip


class InvalidOrderEvent(ValueError):
    """The event is not a well-formed order: the message names the field and the rule it breaks."""


class Customer(msgspec.Struct, forbid_unknown_fields=False):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class LineItem(msgspec.Struct):
    product_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    # Decoded as any JSON scalar so a float can be refused with a reason, not a type error.
    unit_price: str | float | int


class OrderPlaced(msgspec.Struct):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    type: str
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    customer: Customer
    currency: str
    items: Annotated[list[LineItem], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]
    occurred_at: str | None = None
    payment_method: Annotated[str, msgspec.Meta(max_length=200)] | None = None


_decoder = msgspec.json.Decoder(OrderPlaced)


@dataclass(frozen=True)
class RequestedItem:
    product_id: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderRequest:
    """A validated order event: what the customer asked for, prices exactly as sent (verified later)."""

    event_id: str
    idempotency_key: str
    customer_id: str
    email: str | None
    phone: str | None
    currency: str
    items: tuple[RequestedItem, ...]
    payment_method: str | None

    @property
    def request_sha256(self) -> str:
        """Fingerprint of what is asked (items with their sent prices, currency, payment method): the
        same for a redelivery, different for a reused idempotency key with other contents."""
        asked = msgspec.json.encode(
            [
                self.currency,
                self.payment_method,
                sorted(
                    [item.product_id, item.quantity, str(item.unit_price.normalize())] for item in self.items
                ),
            ]
        )
        return hashlib.sha256(asked).hexdigest()


def from_minor_units(amount_minor: int, currency: str) -> Decimal:
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    return Decimal(amount_minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def format_minor(amount_minor: int, currency: str) -> str:
    """12.50 for (1250, 'USD'); 1250 for (1250, 'JPY')."""
    return str(from_minor_units(amount_minor, currency))


def _parse_price(raw: str | float | int, where: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str):
        raise InvalidOrderEvent(
            f'{where}: money must be a decimal string such as "12.50", not a JSON number ({raw!r})'
        )
    if len(raw) > 4 * MAX_PRICE_DIGITS:
        raise InvalidOrderEvent(f"{where}: {raw[:20]!r}... ({len(raw)} characters) is not a decimal amount")
    try:
        # Decimal also reads other scripts' digits ("١٢"); money on the wire is ASCII.
        if not raw.isascii():
            raise InvalidOperation
        price = Decimal(raw.strip())
    except InvalidOperation:
        raise InvalidOrderEvent(f"{where}: {raw!r} is not a decimal amount") from None
    if not price.is_finite() or price < 0:
        raise InvalidOrderEvent(f"{where}: {raw!r} is not a finite, non-negative amount")
    # Bounded here, so no later arithmetic on the price can overflow or need rounding.
    exponent = price.as_tuple().exponent
    if price.adjusted() >= MAX_PRICE_DIGITS or not isinstance(exponent, int) or exponent < -MAX_PRICE_DIGITS:
        raise InvalidOrderEvent(
            f"{where}: {raw!r} is out of range (at most {MAX_PRICE_DIGITS} digits before and after the point)"
        )
    return price


# Unicode's categories Cc (controls, C0 and C1) and Cs (surrogates), whose members the standard's
# stability policy fixes: one regex search per field instead of a category lookup per character.
_REFUSED_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _check_text(where: str, value: str | None) -> None:
    """Refuse NUL (PostgreSQL text cannot hold it) and every other control or unpaired surrogate code point."""
    if value is None:
        return
    refused = _REFUSED_CHARACTERS.search(value)
    if refused is not None:
        raise InvalidOrderEvent(
            f"{where}: control character U+{ord(refused.group()):04X} at position {refused.start()} "
            "is not allowed"
        )


def parse_order_event(payload: bytes) -> OrderRequest:
    """The validated order, or InvalidOrderEvent naming the first rule the event breaks."""
    try:
        event = _decoder.decode(payload)
    except msgspec.ValidationError as invalid:
        raise InvalidOrderEvent(f"invalid order event: {invalid}") from None
    except msgspec.DecodeError as malformed:
        raise InvalidOrderEvent(f"malformed JSON: {malformed}") from None
    except RecursionError:
        raise InvalidOrderEvent("malformed JSON: nested too deeply to decode") from None
    for where, text in (
        ("event_id", event.event_id),
        ("idempotency_key", event.idempotency_key),
        ("customer.id", event.customer.id),
        ("customer.email", event.customer.email),
        ("customer.phone", event.customer.phone),
        ("payment_method", event.payment_method),
        *((f"items[{index}].product_id", item.product_id) for index, item in enumerate(event.items)),
    ):
        _check_text(where, text)
    if event.type != "order.placed":
        raise InvalidOrderEvent(f"event type {event.type!r} is not 'order.placed'")
    currency = event.currency.upper()
    if currency not in CURRENCY_EXPONENTS or event.currency != currency:
        raise InvalidOrderEvent(f"currency {event.currency!r} is not a supported ISO 4217 code")
    items = []
    for index, item in enumerate(event.items):
        price = _parse_price(item.unit_price, f"items[{index}].unit_price")
        items.append(RequestedItem(item.product_id, item.quantity, price))
    if len({item.product_id for item in items}) != len(items):
        raise InvalidOrderEvent("items: a product appears on more than one line")
    return OrderRequest(
        event_id=event.event_id,
        idempotency_key=event.idempotency_key,
        customer_id=event.customer.id,
        email=event.customer.email,
        phone=event.customer.phone,
        currency=currency,
        items=tuple(items),
        payment_method=event.payment_method,
    )
