"""Retry policies for assets that call external services, so a passing fault does not fail a run."""

import dagster as dg

# A step that lost a connection or hit a timeout is rerun whole; every step is idempotent, so a rerun
# yields the same state. Mirrors the in-process retry block: 3 tries, 1 s -> 2 s -> 4 s, with jitter.
EXTERNAL_CALL_RETRY = dg.RetryPolicy(
    max_retries=3,
    delay=1.0,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
