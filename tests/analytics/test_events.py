"""The event model: valid events decode into warehouse columns, invalid ones get a reason naming them."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hub_pipelines.analytics.events import MAX_EVENT_BYTES, decode_batch, events_to_arrow
from hub_pipelines.core.ports import TopicMessage

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e-1",
        "type": "page_view",
        "user_id": "u-1",
        "session_id": "s-1",
        "ts": NOW.isoformat(),
        "properties": {"path": "/"},
    }
    base.update(changes)
    return base


def message(payload: object, offset: int = 0) -> TopicMessage:
    value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return TopicMessage("events", 0, offset, value)


def test_valid_events_become_columns_with_their_topic_position():
    purchase = event(event_id="e-2", type="purchase", properties={"product_id": "p-1", "amount": "12.50"})
    batch = decode_batch([message(event()), message(purchase, offset=1)])
    assert not batch.rejected
    table = events_to_arrow(batch.events, batch.messages).to_pylist()
    assert [row["event_id"] for row in table] == ["e-1", "e-2"]
    assert table[1]["amount"] == Decimal("12.50") and table[1]["product_id"] == "p-1"
    assert table[1]["offset"] == 1 and table[0]["ts"] == NOW


def test_each_invalid_event_is_rejected_with_a_reason_naming_it():
    cases = {
        b"not json": "malformed",
        json.dumps(event(type="teleport")).encode(): "type",
        json.dumps(event(type="purchase", properties={})).encode(): "purchase without properties.amount",
        json.dumps(event(type="error", properties={})).encode(): "error event without properties.code",
        json.dumps(event(ts="2026-03-10T12:00:00")).encode(): "ts",
        json.dumps(event(event_id="has space")).encode(): "event_id",
        json.dumps(event(event_id="ends-in-newline\n")).encode(): "event_id",
        json.dumps(event(type="purchase", properties={"amount": "1.234"})).encode(): "2 decimal places",
    }
    batch = decode_batch([message(value, offset) for offset, value in enumerate(cases)])
    assert not batch.events
    for rejected, expected in zip(batch.rejected, cases.values(), strict=True):
        assert f"events partition 0 offset {rejected.message.offset}" in rejected.reason
        assert expected in rejected.reason


def test_oversized_event_is_rejected_before_decoding():
    huge = event(properties={"path": "/" + "x" * MAX_EVENT_BYTES})
    batch = decode_batch([message(huge)])
    assert not batch.events
    assert f"exceeds the {MAX_EVENT_BYTES}-byte limit" in batch.rejected[0].reason


def test_events_outside_the_accepted_window_are_rejected_and_late_ones_inside_are_kept():
    too_old = event(event_id="old", ts=(NOW - timedelta(days=800)).isoformat())
    late = event(event_id="late", ts=(NOW - timedelta(days=3)).isoformat())
    future = event(event_id="future", ts=(NOW + timedelta(days=2)).isoformat())
    batch = decode_batch(
        [message(too_old), message(late, 1), message(future, 2)],
        accept_from=NOW - timedelta(days=730),
        accept_until=NOW + timedelta(days=1),
    )
    assert [e.event_id for e in batch.events] == ["late"]
    assert ["outside retention" in r.reason or "future" in r.reason for r in batch.rejected] == [True, True]


def test_events_outside_the_warehouse_time_span_are_rejected_even_without_a_window():
    outside = [
        event(event_id="e-early", ts="1899-12-31T23:59:59Z"),
        event(event_id="e-late", ts="9999-12-31T23:59:59.999999-23:59"),
        event(event_id="e-first", ts="1900-01-01T00:00:00Z"),
    ]
    batch = decode_batch([message(value, offset) for offset, value in enumerate(outside)])
    assert [e.event_id for e in batch.events] == ["e-first"]
    assert ["earliest time" in batch.rejected[0].reason, "future" in batch.rejected[1].reason] == [True, True]
    assert events_to_arrow(batch.events, batch.messages).num_rows == 1


def test_json_nested_too_deeply_is_rejected_naming_the_message():
    deep = b'{"event_id": "e-1", "extra": ' + b"[" * 8_000 + b"]" * 8_000 + b"}"
    batch = decode_batch([message(deep, offset=7)])
    assert not batch.events
    assert batch.rejected[0].reason == "events partition 0 offset 7: JSON nested too deeply to decode"
