"""What one landed range adds up to: every message read is landed, a duplicate, or dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LandingCounts:
    read: int = 0
    landed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def __add__(self, other: LandingCounts) -> LandingCounts:
        return LandingCounts(
            self.read + other.read,
            self.landed + other.landed,
            self.duplicates + other.duplicates,
            self.dead_lettered + other.dead_lettered,
        )

    @property
    def reconciles(self) -> bool:
        return self.read == self.landed + self.duplicates + self.dead_lettered

    def as_metadata(self) -> dict[str, int]:
        return {
            "read": self.read,
            "landed": self.landed,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
        }
