"""Paces the demo's uploads to what the machine serves: no new uploads while the media backlog is high.

One transcode runs at a time locally, so uploads dropped at a fixed rate can outrun it and the queue of
media runs only grows. The backlog is the media runs not finished yet plus the uploads the sensor has
not registered yet; above `bound` the feeder skips its uploads for the round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class UploadPacer:
    bound: int
    unfinished_media_runs: Callable[[], int]
    registered: Callable[[str], bool]  # an uploaded object key has its partition (its run is requested)
    unregistered: list[str] = field(default_factory=list)

    def backlog(self) -> int:
        self.unregistered = [key for key in self.unregistered if not self.registered(key)]
        return self.unfinished_media_runs() + len(self.unregistered)

    def uploads_due(self) -> tuple[bool, int]:
        """Whether the next uploads may be dropped, and the backlog that decided it."""
        backlog = self.backlog()
        return backlog <= self.bound, backlog

    def uploaded(self, keys: Iterable[str]) -> None:
        self.unregistered.extend(keys)
