"""The two ways a media step stops short of its output, as its asset reports them to Dagster."""

from __future__ import annotations


class StepRefused(Exception):
    """Running the step again would end the same way (the upload is rejected or quarantined, or its
    bytes have no clean verdict): the step is not retried."""

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.metadata = metadata or {}


class StepBlocked(Exception):
    """The step cannot run yet (the upload is not where it should be, an earlier step has not run, the
    scanner is down); a retry may succeed."""
