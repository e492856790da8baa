"""Raw order events sealed at rest: inbox and dead-letter payloads under the PII keyring (AES-256-GCM).

A payload is sealed where it is written and opened where it is read. The key id is stored beside it
(`payload_key_id`), and the associated data binds it to its row (the inbox's topic/partition/offset,
a dead letter's source and position), so bytes copied to another row do not open. A NULL key id marks
plaintext: a row written before sealing (`rotate_keys` seals those), or a dead letter of a source that
carries no PII (media webhooks).

The keyring is the one of `settings.pii_keys()` (HUB_PII_KEYS), the same the orders' e-mail and phone
are encrypted with; tests pass their own.
"""

from __future__ import annotations

import functools

from hub_pipelines import settings
from hub_pipelines.orders.pii import PiiCipher

# Dead letters of these sources hold raw order events (customer e-mail and phone); others are not sealed.
PII_DEAD_LETTER_SOURCES = frozenset({"orders-landing", "orders-intake"})


def payload_keyring() -> PiiCipher:
    return _keyring(settings.pii_keys())


@functools.lru_cache(maxsize=4)
def _keyring(setting: str) -> PiiCipher:
    return PiiCipher.from_setting(setting)


def inbox_context(topic: str, partition: int, offset: int) -> str:
    return f"topic_inbox:{topic}:{partition}:{offset}"


def dead_letter_context(
    source: str, topic: str | None, partition: int | None, offset: int | None, event_id: str | None
) -> str:
    if topic is None:
        return f"dead_letters:{source}:event:{event_id}"
    return f"dead_letters:{source}:{topic}:{partition}:{offset}"


def seal_inbox_payload(
    topic: str, partition: int, offset: int, payload: bytes, keyring: PiiCipher | None = None
) -> dict[str, object]:
    """The `payload` and `payload_key_id` columns of an inbox row."""
    keyring = keyring or payload_keyring()
    return {
        "payload": keyring.seal(payload, inbox_context(topic, partition, offset)),
        "payload_key_id": keyring.active_key_id,
    }


def open_inbox_payload(
    topic: str,
    partition: int,
    offset: int,
    payload: bytes,
    key_id: str | None,
    keyring: PiiCipher | None = None,
) -> bytes:
    """The event's original bytes; raises PiiDecryptionFailed or PiiKeyError naming the row."""
    if key_id is None:
        return bytes(payload)
    return (keyring or payload_keyring()).open(
        bytes(payload), key_id, inbox_context(topic, partition, offset)
    )


def seal_dead_letter_payload(
    source: str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    event_id: str | None,
    payload: bytes,
    keyring: PiiCipher | None = None,
) -> dict[str, object]:
    """The `payload` and `payload_key_id` columns of a dead letter."""
    keyring = keyring or payload_keyring()
    context = dead_letter_context(source, topic, partition, offset, event_id)
    return {"payload": keyring.seal(payload, context), "payload_key_id": keyring.active_key_id}


def open_dead_letter_payload(
    source: str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    event_id: str | None,
    payload: bytes | None,
    key_id: str | None,
    keyring: PiiCipher | None = None,
) -> bytes | None:
    if payload is None or key_id is None:
        return None if payload is None else bytes(payload)
    context = dead_letter_context(source, topic, partition, offset, event_id)
    return (keyring or payload_keyring()).open(bytes(payload), key_id, context)
