"""Customer contact details encrypted at rest with AES-256-GCM; the key id is stored beside the ciphertext.

Keys come from the environment as `HUB_PII_KEYS="k2:<base64 32 bytes>,k1:<base64 32 bytes>"`; the first
one encrypts, every listed one can still decrypt, so keys rotate by prepending a new one. Each value is
bound to its order and field (AES-GCM associated data), so a ciphertext copied to another row fails.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PII_KEYS_ENV = "HUB_PII_KEYS"
_NONCE_BYTES = 12


class PiiKeyError(ValueError):
    """The PII key setting is missing or malformed, or names no key that can decrypt a value."""


class PiiDecryptionFailed(ValueError):
    """A stored value does not decrypt with its key: tampered, moved to another row, or wrong key."""


@dataclass(frozen=True)
class PiiCipher:
    keys: Mapping[str, bytes]
    active_key_id: str

    @classmethod
    def from_setting(cls, setting: str) -> PiiCipher:
        """Parse 'kid:base64key[,kid:base64key...]'; the first key is the active one."""
        keys: dict[str, bytes] = {}
        for part in filter(None, (piece.strip() for piece in setting.split(","))):
            key_id, _, encoded = part.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise PiiKeyError(f"{PII_KEYS_ENV}: key {key_id!r} is not base64") from None
            if len(key) != 32 or not key_id:
                raise PiiKeyError(f"{PII_KEYS_ENV}: key {key_id!r} must be 'id:<base64 of 32 bytes>'")
            keys[key_id] = key
        if not keys:
            raise PiiKeyError(f"{PII_KEYS_ENV} names no key")
        return cls(keys=keys, active_key_id=next(iter(keys)))

    def encrypt(self, value: str, context: str) -> bytes:
        return self.seal(value.encode(), context)

    def decrypt(self, blob: bytes, key_id: str, context: str) -> str:
        return self.open(blob, key_id, context).decode()

    def seal(self, data: bytes, context: str) -> bytes:
        """Nonce + ciphertext + tag of `data` under the active key, bound to `context`."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.keys[self.active_key_id]).encrypt(nonce, data, context.encode())

    def open(self, blob: bytes, key_id: str, context: str) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise PiiKeyError(f"no PII key {key_id!r} is configured; it is needed to decrypt {context}")
        if len(blob) < _NONCE_BYTES:
            raise PiiDecryptionFailed(f"{context} is {len(blob)} bytes, shorter than its nonce")
        try:
            return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise PiiDecryptionFailed(f"{context} does not decrypt with key {key_id!r}") from None


def new_key_setting(key_id: str = "k1") -> str:
    """A fresh setting for HUB_PII_KEYS (for local runs and tests)."""
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def pii_context(order_id: str, field: str) -> str:
    return f"order:{order_id}:{field}"
