"""Analytics events: the JSON the site sends, decoded fast into columns ready for the warehouse.

Each message is decoded by msgspec straight into a typed, untracked-by-GC struct (about 1 us per
event); the structs become Arrow columns for one insert. A batch checks the event ids' pattern on the
id column at once (RE2, in Arrow) instead of per event in msgspec (whose regex cost more than the rest
of the decoding), and decodes again with the full model only the events that fail it, for msgspec's
own reason. Every invalid message gets a reason that names it (topic, partition, offset, event id when
known) and says what is wrong with it; oversized ones are refused before any parsing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from hub_pipelines.core.ports import TopicMessage

EventType = Literal["page_view", "add_to_cart", "purchase", "error"]
EVENT_TYPES: tuple[str, ...] = ("page_view", "add_to_cart", "purchase", "error")
MAX_EVENT_BYTES = 16 * 1024
AMOUNT_TYPE = pa.decimal128(18, 2)
_MAX_AMOUNT = Decimal("9999999999999999.99")
# The span of ClickHouse's DateTime64(3) (raw_events.ts): a timestamp outside it is refused by the insert.
EARLIEST_TS = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TS = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

# Ids are restricted to a plain alphabet (UUIDs, ULIDs, snowflakes...): they end up in Redis keys,
# deduplication tokens and log lines, where quotes, spaces and control characters only cause trouble.
_ID_PATTERN = "^[0-9A-Za-z_.:-]+$"
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_ID_PATTERN)]
UncheckedEventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
OptionalText = Annotated[str, msgspec.Meta(max_length=2000)] | None


class EventProperties(msgspec.Struct, frozen=True, gc=False):
    path: OptionalText = None
    product_id: OptionalText = None
    amount: Decimal | None = None
    code: OptionalText = None


class Event(msgspec.Struct, frozen=True, gc=False):
    """One analytics event; unknown fields are ignored, so producers can add fields first."""

    event_id: UncheckedEventId
    type: EventType
    user_id: ShortText
    session_id: ShortText
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    properties: EventProperties = EventProperties()


class CheckedEvent(Event, frozen=True, gc=False):
    """An event whose id msgspec checks against the id alphabet too (for single events and reasons)."""

    event_id: EventId


_decode_one = msgspec.json.Decoder(CheckedEvent)
_decode_unchecked_id = msgspec.json.Decoder(Event)
_decode_event_id = msgspec.json.Decoder(dict[str, object])

RAW_EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("path", pa.string()),
        ("product_id", pa.string()),
        ("amount", AMOUNT_TYPE),
        ("error_code", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
    ]
)


class InvalidEvent(ValueError):
    """A message that is not a valid analytics event; the message names it and the problem."""


@dataclass(frozen=True)
class Rejected:
    """A message that cannot land, with the reason and its raw bytes for the dead-letter table."""

    message: TopicMessage
    reason: str
    event_id: str | None = None


@dataclass
class DecodedBatch:
    """The valid events of a batch (with the message each came from) and the rejected messages."""

    events: list[Event] = field(default_factory=list)
    messages: list[TopicMessage] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def describe(message: TopicMessage, event_id: str | None = None) -> str:
    where = f"{message.topic} partition {message.partition} offset {message.offset}"
    return f"{where} (event {event_id})" if event_id else where


def _semantic_problem(event: Event) -> str | None:
    amount = event.properties.amount
    if event.type == "purchase":
        if amount is None:
            return "purchase without properties.amount"
        if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
            return f"purchase amount {amount} is not a non-negative amount below 10^16"
        if amount != amount.quantize(Decimal("0.01")):
            return f"purchase amount {amount} has more than 2 decimal places"
    elif amount is not None:
        return f"{event.type} event carries an amount ({amount}); only purchases do"
    if event.type == "error" and not event.properties.code:
        return "error event without properties.code"
    return None


def _event_id_of(value: bytes) -> str | None:
    try:
        event_id = _decode_event_id.decode(value).get("event_id")
    except (msgspec.DecodeError, RecursionError):
        return None
    return event_id if isinstance(event_id, str) and event_id else None


def _oversized(message: TopicMessage) -> str:
    return (
        f"{describe(message)}: event of {len(message.value)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit"
    )


def _outside_span(ts: datetime, earliest: datetime, latest: datetime, retention_starts: bool) -> str | None:
    if ts < earliest:
        limit = "outside retention" if retention_starts else "before the warehouse's earliest time"
        return f"ts {ts.isoformat()} is before {earliest.isoformat()}, {limit}"
    if ts > latest:
        return f"ts {ts.isoformat()} is after {latest.isoformat()}, too far in the future"
    return None


def _problem_of(error: Exception) -> str:
    if isinstance(error, msgspec.DecodeError):
        return str(error)
    if isinstance(error, RecursionError):
        return "JSON nested too deeply to decode"
    return f"undecodable ({type(error).__name__}: {error})"


def _rejected(message: TopicMessage, error: Exception) -> Rejected:
    if isinstance(error, InvalidEvent):
        return Rejected(message, str(error))
    event_id = _event_id_of(message.value)
    return Rejected(message, f"{describe(message, event_id)}: {_problem_of(error)}", event_id)


def decode_batch(
    messages: Sequence[TopicMessage],
    accept_from: datetime | None = None,
    accept_until: datetime | None = None,
) -> DecodedBatch:
    """Decode every message; invalid ones are rejected with a reason, never raised (whatever the bytes).

    Events stamped before `accept_from` (they would fall out of retention at once) or after
    `accept_until` (a clock far ahead) are rejected too; late events inside the window are valid. So
    are events outside the span raw_events.ts can hold, whatever the window.
    """
    batch = DecodedBatch()
    rejected: list[tuple[int, Rejected]] = []
    positions: list[int] = []
    decode = _decode_unchecked_id.decode
    retention_starts = accept_from is not None and accept_from > EARLIEST_TS
    earliest = accept_from if accept_from is not None and retention_starts else EARLIEST_TS
    latest = accept_until if accept_until is not None and accept_until < LATEST_TS else LATEST_TS
    for position, message in enumerate(messages):
        try:
            if len(message.value) > MAX_EVENT_BYTES:
                raise InvalidEvent(_oversized(message))
            event = decode(message.value)
            problem = _semantic_problem(event)
            if problem is None and not earliest <= event.ts <= latest:
                problem = _outside_span(event.ts, earliest, latest, retention_starts)
        # The decoder's contract is that no message fails its batch: msgspec's refusals are expected,
        # and anything else (RecursionError on deep nesting, a Decimal trap) is this message's fault too.
        except Exception as error:
            rejected.append((position, _rejected(message, error)))
            continue
        if problem:
            reason = f"{describe(message, event.event_id)}: {problem}"
            rejected.append((position, Rejected(message, reason, event.event_id)))
            continue
        batch.events.append(event)
        batch.messages.append(message)
        positions.append(position)
    valid = _ids_in_alphabet([event.event_id for event in batch.events])
    if valid is not None:
        for position, message, ok in zip(positions, batch.messages, valid, strict=True):
            if not ok:
                rejected.append((position, _rejected_id(message)))
        batch.events = [event for event, ok in zip(batch.events, valid, strict=True) if ok]
        batch.messages = [message for message, ok in zip(batch.messages, valid, strict=True) if ok]
    batch.rejected = [reject for _, reject in sorted(rejected, key=lambda pair: pair[0])]
    return batch


def _ids_in_alphabet(ids: list[str]) -> list[bool] | None:
    """Per id, whether it matches the id pattern; None when all do (the usual case, checked at once)."""
    matches = pc.match_substring_regex(pa.array(ids, pa.string()), _ID_PATTERN)
    return None if pc.all(matches).as_py() is not False else matches.to_pylist()


def _rejected_id(message: TopicMessage) -> Rejected:
    """msgspec's reason for an id outside the pattern, or ours for one only RE2 refuses (a final newline)."""
    try:
        _decode_one.decode(message.value)
    except Exception as error:
        return _rejected(message, error)
    return Rejected(message, f"{describe(message)}: event_id does not match {_ID_PATTERN} (at `$.event_id`)")


def events_to_arrow(events: Sequence[Event], messages: Sequence[TopicMessage]) -> pa.Table:
    """The raw_events columns for these events, each with the topic position it came from."""
    properties = [e.properties for e in events]
    columns = [
        pa.array([e.event_id for e in events], pa.string()),
        pa.array([e.type for e in events], pa.string()),
        pa.array([e.user_id for e in events], pa.string()),
        pa.array([e.session_id for e in events], pa.string()),
        pa.array([e.ts for e in events], pa.timestamp("ms", tz="UTC")),
        pa.array([p.path for p in properties], pa.string()),
        pa.array([p.product_id for p in properties], pa.string()),
        pa.array([p.amount for p in properties], AMOUNT_TYPE),
        pa.array([p.code for p in properties], pa.string()),
        pa.array([m.topic for m in messages], pa.string()),
        pa.array([m.partition for m in messages], pa.int32()),
        pa.array([m.offset for m in messages], pa.int64()),
    ]
    return pa.Table.from_arrays(columns, schema=RAW_EVENT_SCHEMA)
