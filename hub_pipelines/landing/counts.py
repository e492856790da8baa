"""What one landed range adds up to.

Every message read is landed, a duplicate, or dead-lettered. Every offset of the range is a message
read, a gap (an offset the broker holds no message for: a transaction's commit or abort marker, an
aborted transaction's record, a record compacted away), or lost upstream (deleted by retention or by
hand before it was read).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LandingCounts:
    read: int = 0
    landed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    gaps: int = 0
    lost: int = 0

    def __add__(self, other: LandingCounts) -> LandingCounts:
        return LandingCounts(
            self.read + other.read,
            self.landed + other.landed,
            self.duplicates + other.duplicates,
            self.dead_lettered + other.dead_lettered,
            self.gaps + other.gaps,
            self.lost + other.lost,
        )

    @property
    def reconciles(self) -> bool:
        return self.read == self.landed + self.duplicates + self.dead_lettered

    @property
    def offsets(self) -> int:
        """The offsets these counts account for."""
        return self.read + self.gaps + self.lost

    def as_metadata(self) -> dict[str, int]:
        return {
            "read": self.read,
            "landed": self.landed,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "gaps": self.gaps,
            "lost": self.lost,
        }
