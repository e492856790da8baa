"""Any order event, however hostile its bytes or headers, ends as an order or as a rejection with a
reason, without an internal error, and the batch completes (hypothesis, against PostgreSQL and Stripe)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.orders.authenticity import (
    AUTHORIZATION_HEADER,
    PAYLOAD_HASH_CLAIM,
    SIGNATURE_HEADER,
    payload_sha256,
)
from hub_pipelines.orders.processing import OrderBatchProcessor
from hub_pipelines.orders.reservation import ACCEPTED, DUPLICATE, REJECTED
from hub_pipelines.orders.tables import PAID, order_intake, orders
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.orders.conftest import ProcessorFactory
from tests.orders.support import JWT_SECRET, Inbox, encode, hmac_headers, jwt_headers, order_event
from tests.services.kafka import KafkaBroker
from tests.services.raw_kafka_records import RawRecord, hostile_records, produce_raw

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


def forged_raw_claims(claims_json: str) -> str:
    """An HS256 token over claims given as JSON text as it is (NaN, huge numbers)."""
    segments = [
        base64.urlsafe_b64encode(part).rstrip(b"=")
        for part in (b'{"alg":"HS256","typ":"JWT"}', claims_json.encode())
    ]
    signing_input = b".".join(segments)
    signature = base64.urlsafe_b64encode(
        hmac.new(JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    ).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


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


def signed_bytes(name: str, payload: bytes) -> Message:
    return name, payload, {k: v.decode() for k, v in hmac_headers(payload).items()}


def with_raw_field(field: str, raw: str, **overrides: Any) -> bytes:
    """A signed-shape order event whose `field` is JSON text written as it is (NaN, 1e999, duplicates...)."""
    event = order_event(**overrides)
    event[field] = "\x00placeholder"
    return encode(event).replace(b'"\\u0000placeholder"', raw.encode())


def token(claims: dict[str, Any], **options: Any) -> dict[str, str]:
    base = {"iss": "hub-checkout", "aud": "hub-orders", "exp": int(time.time()) + 300}
    return {AUTHORIZATION_HEADER: f"Bearer {jwt.encode({**base, **claims}, **options)}"}


def jwt_signed(payload: bytes, **options: Any) -> dict[str, str]:
    return token(
        {PAYLOAD_HASH_CLAIM: payload_sha256(payload)}, **{"key": JWT_SECRET, "algorithm": "HS256", **options}
    )


def item(quantity: Any, price: Any = "12.50", product: str = "p-cup") -> dict[str, Any]:
    return {"product_id": product, "quantity": quantity, "unit_price": price}


# What a hostile producer tries beyond the fuzzed fields: JSON edge cases, quantities and prices out of
# range, currency mismatch, empty and oversize item lists, tokens of every wrong kind.
_JWT_EVENT = encode(order_event())
HOSTILE_SHAPES: list[Message] = [
    signed_bytes("duplicate keys", encode(order_event())[:-1] + b', "event_id": "dup-2", "items": []}'),
    signed_bytes(
        "NaN quantity",
        with_raw_field("items", '[{"product_id": "p-cup", "quantity": NaN, "unit_price": "12.50"}]'),
    ),
    signed_bytes(
        "Infinity price",
        with_raw_field("items", '[{"product_id": "p-cup", "quantity": 1, "unit_price": Infinity}]'),
    ),
    signed_bytes(
        "huge integer",
        with_raw_field(
            "items", '[{"product_id": "p-cup", "quantity": 1' + "0" * 400 + ', "unit_price": "12.50"}]'
        ),
    ),
    signed_bytes(
        "huge exponent",
        with_raw_field("items", '[{"product_id": "p-cup", "quantity": 1e999, "unit_price": "12.50"}]'),
    ),
    signed_bytes("deep customer", with_raw_field("customer", '{"id": ' * 5000 + '"c"' + "}" * 5000)),
    signed_bytes("escaped lone surrogate", with_raw_field("customer", '{"id": "c-\\ud800"}')),
    signed_bytes("BOM", b"\xef\xbb\xbf" + encode(order_event())),
    signed_bytes("UTF-16", json.dumps(order_event()).encode("utf-16")),
    *(
        signed(order_event() | {"items": [item(quantity)]})
        for quantity in (0, -1, 10**6, 2**63, 1.5, "1", True)
    ),
    *(
        signed(order_event() | {"items": [item(1, price)]})
        for price in (
            "1.25E+1",
            "1250e-2",
            "0.1250E2",
            "1e-3",
            "12.50e0",
            "+12.50",
            " 12.50",
            "12,50",
            "0x1p3",
        )
    ),
    signed(order_event(currency="EUR")),
    signed(order_event(currency="usd")),
    signed(order_event() | {"items": []}),
    signed(order_event() | {"items": [item(1, product=f"p-{n}") for n in range(101)]}),
    signed(order_event() | {"items": [item(1), item(1)]}),
    ("alg none", _JWT_EVENT, jwt_signed(_JWT_EVENT, key=None, algorithm="none")),
    ("alg HS512", _JWT_EVENT, jwt_signed(_JWT_EVENT, algorithm="HS512")),
    ("unknown kid", _JWT_EVENT, jwt_signed(_JWT_EVENT, headers={"kid": "k-unknown\x00"})),
    (
        "expired",
        _JWT_EVENT,
        token({PAYLOAD_HASH_CLAIM: payload_sha256(_JWT_EVENT), "exp": 1}, key=JWT_SECRET, algorithm="HS256"),
    ),
    (
        "not yet",
        _JWT_EVENT,
        token(
            {PAYLOAD_HASH_CLAIM: payload_sha256(_JWT_EVENT), "nbf": 2**40}, key=JWT_SECRET, algorithm="HS256"
        ),
    ),
    (
        "issued in the future",
        _JWT_EVENT,
        token(
            {PAYLOAD_HASH_CLAIM: payload_sha256(_JWT_EVENT), "iat": 2**40}, key=JWT_SECRET, algorithm="HS256"
        ),
    ),
    (
        "exp huge",
        _JWT_EVENT,
        token(
            {PAYLOAD_HASH_CLAIM: payload_sha256(_JWT_EVENT), "exp": 10**400},
            key=JWT_SECRET,
            algorithm="HS256",
        ),
    ),
    (
        "exp NaN",
        _JWT_EVENT,
        {
            AUTHORIZATION_HEADER: "Bearer "
            + forged_raw_claims(
                '{"iss": "hub-checkout", "aud": "hub-orders", "exp": NaN, "payload_sha256": "'
                + payload_sha256(_JWT_EVENT)
                + '"}'
            )
        },
    ),
    (
        "huge token",
        _JWT_EVENT,
        token(
            {PAYLOAD_HASH_CLAIM: payload_sha256(_JWT_EVENT), "pad": "x" * 300_000},
            key=JWT_SECRET,
            algorithm="HS256",
        ),
    ),
    ("two schemes", _JWT_EVENT, {**jwt_signed(_JWT_EVENT), SIGNATURE_HEADER: "sha256=" + "0" * 64}),
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
@example(hostile=HOSTILE_SHAPES)
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


@st.composite
def raw_order_record(draw: st.DrawFn) -> RawRecord:
    """A record as a misbehaving producer writes it on the wire, around a signed order or not."""
    event = order_event(customer=f"c-{draw(st.uuids()).hex[:8]}")
    event["event_id"] = str(draw(st.uuids()))
    signed_value = encode(event)
    record = draw(
        hostile_records(st.one_of(st.just(signed_value), st.none(), st.just(b""), st.binary(max_size=64)))
    )
    if record.value is None:
        return record
    signature = (SIGNATURE_HEADER.encode(), hmac_headers(record.value)[SIGNATURE_HEADER])
    placed = draw(st.sampled_from(["first", "last", "unsigned"]))
    headers = list(record.headers)
    headers = (
        [signature, *headers] if placed == "first" else [*headers, signature] if placed == "last" else headers
    )
    return dataclasses.replace(record, headers=headers)


def readable_header_names(record: RawRecord) -> bool:
    """Whether a Kafka client can read the record's header names (librdkafka ends a name at NUL)."""
    try:
        for name, _ in record.headers:
            name.split(b"\x00", 1)[0].decode()
    except UnicodeDecodeError:
        return False
    return True


def json_with_event_id(value: bytes | None) -> bool:
    try:
        return isinstance(json.loads(value or b""), dict) and "event_id" in json.loads(value or b"")
    except ValueError:
        return False


@pytest.fixture
def kafka_topics(kafka_broker: KafkaBroker) -> Iterator[KafkaTopics]:
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers, timeout_seconds=15)
    yield topics
    topics.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=st.lists(raw_order_record(), min_size=1, max_size=6))
@example(
    records=[
        RawRecord(b'{"event_id": "e-1"}', None, [(b"\xff\xfe", b"v")]),
        RawRecord(None, b"\xff", [(b"x-signature", None), (b"x-signature", b"\xff")], timestamp_ms=None),
        RawRecord(b"", None, [], timestamp_ms=-42),
    ]
)
def test_any_record_on_the_wire_ends_landed_and_decided_or_dead_lettered_and_the_order_behind_it_is_paid(
    kafka_broker: KafkaBroker,
    kafka_topics: KafkaTopics,
    make_processor: ProcessorFactory,
    stripe_gateway: StripeGateway,
    ledger_database: PostgresDatabase,
    records: list[RawRecord],
) -> None:
    """Raw records (any key, header names and values of any bytes, no or negative timestamps, null and
    empty values) written to a real broker, landed by the landing code, placed by the ledger."""
    topic = kafka_broker.new_topic("orders")
    _, behind_payload, behind_headers = well_formed()
    behind = RawRecord(
        behind_payload, b"c-1", [(name.encode(), value.encode()) for name, value in behind_headers.items()]
    )
    produce_raw(kafka_broker.bootstrap_servers, topic, 0, [*records, behind])
    end = len(records) + 1

    counts = land_ranges(
        kafka_topics, SqlInboxSink(ledger_database), topic, [OffsetRange(0, 0, end)], "raw", chunk_messages=4
    )
    report = make_processor(stripe_gateway, topic=topic).process_batch()

    assert counts.read == end == counts.landed + counts.duplicates + counts.dead_lettered
    assert not {"retry", "parked"} & set(report.counts), report.outcomes
    with ledger_database.transaction() as connection:
        inbox = set(
            connection.execute(sa.select(topic_inbox.c.offset).where(topic_inbox.c.topic == topic)).scalars()
        )
        decided = dict(
            connection.execute(
                sa.select(order_intake.c.offset, order_intake.c.outcome).where(order_intake.c.topic == topic)
            ).all()
        )
        letters = {
            (source, offset): reason
            for source, offset, reason in connection.execute(
                sa.select(dead_letters.c.source, dead_letters.c.offset, dead_letters.c.reason).where(
                    dead_letters.c.topic == topic
                )
            ).all()
        }
        behind_status = connection.execute(
            sa.select(orders.c.status).join(order_intake, order_intake.c.order_id == orders.c.order_id)
            .where(order_intake.c.topic == topic, order_intake.c.offset == end - 1)
        ).scalar_one()  # fmt: skip
    landing_letters = {offset for source, offset in letters if source == "orders-landing"}
    assert inbox | landing_letters == set(range(end)) and not inbox & landing_letters
    assert set(decided) == inbox
    for (source, offset), reason in letters.items():
        assert reason.startswith(f"{topic} partition 0 offset {offset}: ") or source != "orders-landing", (
            reason
        )
        assert reason.strip()
    assert {offset for offset, outcome in decided.items() if outcome == REJECTED} == {
        offset for source, offset in letters if source == "orders-intake"
    }
    unreadable = {offset for offset, record in enumerate(records) if not readable_header_names(record)}
    assert unreadable <= landing_letters
    for offset in unreadable:
        if json_with_event_id(records[offset].value):
            assert (
                "a header name is not UTF-8, so no header of it can be read"
                in letters[("orders-landing", offset)]
            )
    assert behind_status == PAID
