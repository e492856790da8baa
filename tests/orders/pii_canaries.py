"""Canary customer contact details and the places they must never be found in plaintext."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.ports import SqlDatabase
from tests.orders.support import order_event


@dataclass(frozen=True)
class Canary:
    """A unique e-mail and phone; `hits` finds them in bytes raw, hex-encoded (bytea dumps) or base64."""

    email: str
    phone: str

    @classmethod
    def new(cls) -> Canary:
        token = secrets.token_hex(8)
        return cls(email=f"canary-{token}@pii.example", phone=f"+1555{int(token[:6], 16) % 10**7:07d}")

    def order_event(self, customer: str = "c-1", **overrides: Any) -> dict[str, Any]:
        event = order_event(customer=customer, **overrides)
        event["customer"] = {"id": customer, "email": self.email, "phone": self.phone}
        return event

    def needles(self) -> list[bytes]:
        needles = []
        for value in (self.email, self.phone):
            raw = value.encode()
            needles += [raw, raw.hex().encode(), raw.hex().upper().encode()]
            # base64 of the value at each of the three alignments, without the edge characters.
            for shift in range(3):
                encoded = base64.b64encode(b"\0" * shift + raw)[4:-4]
                needles.append(encoded)
        return needles

    def hits(self, haystack: bytes) -> list[bytes]:
        return [needle for needle in self.needles() if needle in haystack]

    def files_with_hits(self, root: Path) -> list[str]:
        return [str(path) for path in root.rglob("*") if path.is_file() and self.hits(path.read_bytes())]


def stored_payloads(database: SqlDatabase) -> list[tuple[str, bytes]]:
    """Every inbox and dead-letter payload as PostgreSQL stores it (no decoding on the way)."""
    with database.transaction() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT 'topic_inbox', payload FROM topic_inbox "
                "UNION ALL SELECT 'dead_letters', payload FROM dead_letters"
            )
        ).all()
    return [(table, bytes(payload)) for table, payload in rows]
