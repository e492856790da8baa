"""Any order event, however hostile its bytes or headers, ends as an order or as a rejection with a
reason, without an internal error, and the batch completes (hypothesis, against PostgreSQL and Stripe)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub_pipelines.core.platform_tables import dead_letters
from hub_pipelines.orders.authenticity import AUTHORIZATION_HEADER, PAYLOAD_HASH_CLAIM, SIGNATURE_HEADER
from hub_pipelines.orders.processing import OrderBatchProcessor
from hub_pipelines.orders.reservation import ACCEPTED, DUPLICATE, REJECTED
from hub_pipelines.orders.tables import PAID, order_intake, orders
from hub_pipelines.resources.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import JWT_SECRET, Inbox, encode, hmac_headers, jwt_headers, order_event

Message = tuple[str, bytes, dict[str, str]]

HOSTILE_TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(
        ["\x00", "c-\x00", "é", "\ud800", "\u202e", "\x1b[31m", "x" * 300, " ", "", "\u0661\u0662"]
    ),
)
PRICES = st.one_of(
    st.sampled_from(
        [
            "12.50",
            "1E+999999999",
            "1E-999999999",
            "-1",
            "NaN",
            "sNaN",
            "Infinity",
            "12.5",
            "\u0661\u0662.\u0665\u0660",
            "1_2.50",
        ]
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=16),
    st.floats(),
    st.integers(),
    st.none(),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
# What `topic_inbox.headers` (JSONB) can hold: any text but NUL.
HEADER_TEXT = st.text(max_size=80).filter(lambda value: "\x00" not in value)


@st.composite
def hostile_event(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed order event with one or two of its fields made hostile, so the hostile value
    gets as far as the field's own rule (or the database) lets it."""
    product, price = draw(st.sampled_from([("p-cup", "12.50"), ("p-frother", "59.00")]))
    fields: dict[str, Any] = {"customer": "c-1", "product": product, "quantity": 1, "price": price}
    fields["payment_method"] = "pm_card_visa"
    hostile = {
        "customer": HOSTILE_TEXT,
        "idempotency_key": HOSTILE_TEXT,
        "payment_method": HOSTILE_TEXT,
        "product": HOSTILE_TEXT,
        "quantity": st.integers() | JSON_VALUES,
        "price": PRICES,
    }
    for name in draw(st.sets(st.sampled_from(sorted(hostile)), min_size=1, max_size=2)):
        fields[name] = draw(hostile[name])
    event = order_event(
        customer=fields["customer"],
        idempotency_key=fields.get("idempotency_key"),
        items=[(fields["product"], fields["quantity"], fields["price"])],
        payment_method=fields["payment_method"],
    )
    replaced = draw(st.dictionaries(st.sampled_from(sorted(event)), JSON_VALUES | HOSTILE_TEXT, max_size=1))
    return {**event, **replaced}


def deep_json(depth: int) -> bytes:
    return b'{"event_id": "deep", "type": "order.placed", "items": ' + b"[" * depth + b"]" * depth + b"}"


PAYLOADS = st.one_of(
    *[hostile_event().map(lambda event: json.dumps(event).encode())] * 3,
    st.binary(max_size=200),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=1, max_value=200_000).map(deep_json),
)


def forged_token(claimed_hash: Any) -> str:
    claims = {"iss": "hub-checkout", "aud": "hub-orders", "exp": int(time.time()) + 300}
    return jwt.encode({**claims, PAYLOAD_HASH_CLAIM: claimed_hash}, JWT_SECRET, algorithm="HS256")


@st.composite
def hostile_message(draw: st.DrawFn) -> Message:
    payload = draw(PAYLOADS)
    signing = draw(st.sampled_from(["hmac", "hmac", "jwt", "forged-jwt", "any"]))
    if signing == "hmac":
        headers = {name: value.decode() for name, value in hmac_headers(payload).items()}
    elif signing == "jwt":
        headers = {name: value.decode() for name, value in jwt_headers(payload).items()}
    elif signing == "forged-jwt":
        claimed = draw(HOSTILE_TEXT | JSON_VALUES)
        headers = {AUTHORIZATION_HEADER: f"Bearer {forged_token(claimed)}"}
    else:
        names = st.sampled_from([SIGNATURE_HEADER, AUTHORIZATION_HEADER, "traceparent"]) | HEADER_TEXT
        headers = draw(st.dictionaries(names, HEADER_TEXT, max_size=3))
    return str(uuid.uuid4()), payload, headers


def signed(event: dict[str, Any]) -> Message:
    payload = encode(event)
    return event["event_id"], payload, {k: v.decode() for k, v in hmac_headers(payload).items()}


# The inputs that wedged the pipeline on main (issue 13), always among the examples.
UNSIGNED = encode(order_event())
KNOWN_POISON: list[Message] = [
    ("sig-not-ascii", UNSIGNED, {SIGNATURE_HEADER: "sha256=é"}),
    ("jwt-hash-not-ascii", UNSIGNED, {AUTHORIZATION_HEADER: f"Bearer {forged_token('é')}"}),
    signed(order_event(items=[("p-cup", 1, "1E+999999999")])),
    signed(order_event(customer="c-\x00")),
    signed(order_event(idempotency_key="k-\x00")),
    signed(order_event(payment_method="pm_\x00")),
    signed(order_event(items=[("p-\x00", 1, "1.00")])),
    ("deep", deep_json(100_000), {SIGNATURE_HEADER: "sha256=" + "0" * 64}),
]


def well_formed() -> Message:
    return signed(order_event(customer=f"c-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def fuzzed(
    make_processor: ProcessorFactory, stripe_gateway: StripeGateway
) -> tuple[OrderBatchProcessor, Inbox]:
    ledger = make_processor(stripe_gateway)
    return ledger, Inbox(ledger.database)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(hostile=st.lists(hostile_message(), min_size=1, max_size=5))
@example(hostile=KNOWN_POISON)
def test_any_order_event_ends_as_an_order_or_a_rejection_with_a_reason_and_the_batch_completes(
    fuzzed: tuple[OrderBatchProcessor, Inbox], ledger_database: PostgresDatabase, hostile: list[Message]
) -> None:
    ledger, inbox = fuzzed
    offsets = inbox.store([*hostile, well_formed()])

    report = ledger.process_batch()

    assert not {"retry", "parked"} & set(report.counts), report.outcomes
    with ledger_database.transaction() as connection:
        outcomes = dict(
            connection.execute(
                sa.select(order_intake.c.offset, order_intake.c.outcome).where(
                    order_intake.c.offset.in_(offsets)
                )
            ).all()
        )
        reasons = dict(
            connection.execute(
                sa.select(dead_letters.c.offset, dead_letters.c.reason).where(
                    dead_letters.c.offset.in_(offsets)
                )
            ).all()
        )
        behind_the_hostile = connection.execute(
            sa.select(orders.c.status).join(order_intake, order_intake.c.order_id == orders.c.order_id)
            .where(order_intake.c.offset == offsets[-1])
        ).scalar_one()  # fmt: skip
    assert set(outcomes) == set(offsets)
    assert set(outcomes.values()) <= {ACCEPTED, DUPLICATE, REJECTED}
    assert {offset for offset, outcome in outcomes.items() if outcome == REJECTED} == set(reasons)
    assert all(reason.strip() for reason in reasons.values())
    assert behind_the_hostile == PAID
