"""Handing a followed lane from one landing run to the next, so the topic is never left unfollowed for a
run start.

The topic sensor starts the successor before the follower's window ends. The successor warms up (its
process, imports, resources), says it is up (`announce`), then waits until the runs it must let go
first have ended: its predecessor, and where the warehouse admits one process at a time (chdb) the
started runs that asked for the warehouse before it did and wait for it (a day rollup, a CLI run), so
those get it within about one window. The predecessor hears the announcement at its next poll and stops there (`follow_topic`'s
`relieved`). The successor then plans its first batch from the book (`sink.landed_positions`), not
from ranges the sensor chose, so whatever the predecessor landed or left is accounted for exactly
once, and the lane's partitions still land in order.

The wait is bounded: a predecessor killed without its run being marked ended (run monitoring cannot
see a local run's process) is waited for `timeout` seconds at most. Going on then is safe: the chunk
booking makes any overlap land each offset once, and chdb's own folder lock, waited for when the
warehouse is opened, keeps two processes out of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The successor asks whether the runs before it have ended this often: one query on the run table.
HANDOFF_POLL_SECONDS = 0.25


def take_over(
    announce: Callable[[], None],
    waiting_for: Callable[[], list[str]],
    timeout: float,
    poll_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Announce that this run is up, then wait until `waiting_for()` names no run, `timeout` seconds at
    most. Returns the runs still named when the wait gave up (empty when they all ended)."""
    announce()
    deadline = clock() + timeout
    pending = waiting_for()
    while pending and clock() < deadline:
        sleep(min(poll_seconds, max(0.0, deadline - clock())))
        pending = waiting_for()
    return pending
