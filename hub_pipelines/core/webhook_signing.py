"""Signed webhooks: an HMAC-SHA256 over the timestamp and the body, checked with a freshness window.

The sender puts the Unix time in `X-Hub-Timestamp` and `sha256=<hex>` of
HMAC(secret, "<timestamp>." + body) in `X-Hub-Signature`. Signing the timestamp with the body stops
a captured request from being replayed later with a new timestamp; the receiver rejects requests
older than its tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TIMESTAMP_HEADER = "X-Hub-Timestamp"
SIGNATURE_HEADER = "X-Hub-Signature"
DELIVERY_HEADER = "X-Hub-Delivery"
EVENT_HEADER = "X-Hub-Event"
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSignature(ValueError):
    """The request is unsigned, signed with another secret, altered, or too old."""


def signature_for(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The timestamp and signature headers for `body`, signed now unless a timestamp is given."""
    moment = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(moment), SIGNATURE_HEADER: signature_for(secret, moment, body)}


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """The request's timestamp when its signature is valid and fresh; raises InvalidSignature otherwise."""
    lowered = {name.lower(): value for name, value in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    signature = lowered.get(SIGNATURE_HEADER.lower())
    if not stamp or not signature:
        raise InvalidSignature(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        timestamp = int(stamp)
    except ValueError as error:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} {stamp!r} is not a Unix time") from error
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_seconds:
        raise InvalidSignature(
            f"timestamp {timestamp} is {age:.0f} s away from now (tolerance {tolerance_seconds} s)"
        )
    if not hmac.compare_digest(signature_for(secret, timestamp, body), signature):
        raise InvalidSignature("signature does not match the body and timestamp")
    return timestamp


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
