"""Hypothesis strategies for what a producer may put on the events topic: valid events, valid JSON that
is a wrong event (control characters, escaped lone surrogates, huge numbers, deep nesting, oversize
strings, timestamps out of any range, wrong types), truncated JSON and arbitrary bytes, with any key
and headers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from hub_pipelines.analytics.events import EVENT_TYPES


@dataclass(frozen=True)
class HostileMessage:
    """One message to produce; `valid` when it is sure to be a valid event (it must land or be a duplicate)."""

    value: bytes
    valid: bool
    key: bytes | None = None
    headers: dict[str, bytes] | None = None


class Raw(str):
    """JSON text put into a rendered event verbatim (nesting deeper than json.dumps can write, NaN...)."""


def render(event: object) -> bytes:
    """The event as JSON, with each Raw value written as it is."""
    raws: list[str] = []

    def placeholder(value: object) -> object:
        if isinstance(value, Raw):
            raws.append(value)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {key: placeholder(item) for key, item in value.items()}
        if isinstance(value, list):
            return [placeholder(item) for item in value]
        return value

    text = json.dumps(placeholder(event))
    for index, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{index}\x00"), raw, 1)
    return text.encode("utf-8", "surrogatepass")


_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))


def _stamp(now: datetime, back: timedelta, ahead: timedelta) -> st.SearchStrategy[str]:
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    return st.builds(
        lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone).isoformat(),
        st.datetimes(min_value=naive_now - back, max_value=naive_now + ahead),
        st.one_of(st.just(UTC), _offsets),
    )


_id_text = st.from_regex(r"[0-9A-Za-z_.:-]{1,40}", fullmatch=True)
# Any characters a JSON string can carry once decoded, NUL and other control characters included.
_any_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)


def _properties(kind: str) -> st.SearchStrategy[dict[str, object]]:
    if kind == "purchase":
        amount = st.decimals(min_value=0, max_value=Decimal("9999999999999999.99"), places=2)
        return st.fixed_dictionaries(
            {"amount": st.one_of(amount.map(str), amount.map(float).filter(lambda a: a < 1e12))},
            optional={"product_id": _any_text},
        )
    if kind == "error":
        return st.fixed_dictionaries({"code": _any_text}, optional={"path": _any_text})
    return st.fixed_dictionaries({}, optional={"path": _any_text, "product_id": _any_text})


def valid_events(now: datetime) -> st.SearchStrategy[dict[str, object]]:
    """Events the decoder must accept: stamped from two days before `now` to an hour after."""
    return st.sampled_from(EVENT_TYPES).flatmap(
        lambda kind: st.fixed_dictionaries(
            {
                "event_id": _id_text,
                "type": st.just(kind),
                "user_id": _any_text,
                "session_id": _any_text,
                "ts": _stamp(now, timedelta(days=2), timedelta(hours=1)),
                "properties": _properties(kind),
            }
        )
    )


_lone_surrogates = st.builds(
    lambda before, code, after: before + chr(code) + after,
    st.text(max_size=3),
    st.integers(0xD800, 0xDFFF),
    st.text(max_size=3),
)
# msgspec gives up at the interpreter's recursion limit (raised by a few thousand under hypothesis);
# an event is at most 16 KiB.
_deep = st.one_of(
    st.integers(500, 8_000).map(lambda depth: Raw("[" * depth + "]" * depth)),
    st.integers(500, 3_200).map(lambda depth: Raw('{"a":' * depth + "1" + "}" * depth)),
)
_raw_numbers = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1E+999999999",
        "-1e999999",
        "1e-999999999",
        "123456789012345678901234567890123456789",
        "-0",
        "0.1e1",
    ]
).map(Raw)
_stamps_out_of_range = st.one_of(
    st.datetimes(timezones=st.one_of(st.just(UTC), _offsets)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999-23:59",
            "1899-12-31T23:59:59Z",
            "1900-01-01T00:00:00Z",
            "2299-12-31T23:59:59.999Z",
            "2300-01-01T00:00:00Z",
            "1969-12-31T23:59:59.9999Z",
            "2026-02-30T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-01-01 00:00:00Z",
            "",
        ]
    ),
)
_amounts = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "sNaN",
            "-Infinity",
            "1E+999999999",
            "1E-999999999",
            "1e-99999999999999",
            "12.345",
            "-1",
            "0E-5",
        ]
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
_wrong_types = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
hostile_values: st.SearchStrategy[object] = st.one_of(
    _deep,
    _wrong_types,
    st.integers(min_value=2**63),
    st.text(st.characters(max_codepoint=0x1F), max_size=20),
    _any_text,
    _lone_surrogates,
    st.integers(150, 20_000).map(lambda size: "x" * size),
    _raw_numbers,
    _stamps_out_of_range,
    _amounts,
)
_fields = ["event_id", "type", "user_id", "session_id", "ts", "properties", "extra"]
_property_fields = ["amount", "path", "product_id", "code", "extra"]


def _spoiled(event: dict[str, object], draw: st.DrawFn) -> dict[str, object]:
    spoiled = dict(event)
    properties = dict(spoiled["properties"])  # type: ignore[call-overload]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            field = draw(st.sampled_from(_property_fields))
            target = properties
        else:
            field = draw(st.sampled_from(_fields))
            target = spoiled
        if draw(st.integers(0, 4)) == 0:
            target.pop(field, None)
        else:
            target[field] = draw(hostile_values)
    if isinstance(spoiled.get("properties"), dict):
        spoiled["properties"] = properties
    return spoiled


def hostile_messages(now: datetime) -> st.SearchStrategy[HostileMessage]:
    """Any message a producer might send, valid or not, with any key and headers."""

    @st.composite
    def message(draw: st.DrawFn) -> HostileMessage:
        event = draw(valid_events(now))
        shape = draw(st.sampled_from(["valid", "spoiled", "spoiled", "truncated", "bytes"]))
        if shape == "valid":
            value, valid = render(event), True
        elif shape == "spoiled":
            value, valid = render(_spoiled(event, draw)), False
        elif shape == "truncated":
            whole = render(event)
            value, valid = whole[: draw(st.integers(0, len(whole) - 1))], False
        else:
            value, valid = draw(st.binary(max_size=300)), False
        return HostileMessage(
            value,
            valid,
            key=draw(st.none() | st.binary(max_size=16)),
            headers=draw(st.dictionaries(st.text(max_size=8), st.binary(max_size=24), max_size=3)),
        )

    return message()


def nested_too_deeply(now: datetime, field: str) -> HostileMessage:
    """An event whose `field` is an array nested deeper than msgspec (or any recursive decoder) goes."""
    event: dict[str, object] = {
        "event_id": "deep-1",
        "type": "page_view",
        "user_id": "u-1",
        "session_id": "s-1",
        "ts": now.isoformat(),
        "properties": {},
    }
    event[field] = Raw("[" * 8_000 + "]" * 8_000)
    return HostileMessage(render(event), valid=False)


def plain_event(now: datetime, event_id: str) -> HostileMessage:
    event = {
        "event_id": event_id,
        "type": "page_view",
        "user_id": "u-1",
        "session_id": "s-1",
        "ts": now.isoformat(),
    }
    return HostileMessage(render(event), valid=True)
