"""Which process is inside a write right now: PostgreSQL transactions that have written and not yet
committed, traced from their backend to the client process that owns the connection.

A backend with a transaction id (`backend_xid`) has written in its open transaction; its client's
address is a loopback port, and the process owning that port is found through /proc (the socket's
inode among the process's file descriptors).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
IDLE_IN_TRANSACTION = "idle in transaction"


@dataclass(frozen=True)
class OpenWrite:
    backend_pid: int
    client_port: int
    xid: int
    state: str
    query: str


def _fresh_activity(connection: sa.Connection) -> None:
    """pg_stat_activity is read once per transaction; drop that snapshot so each look is current."""
    connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))


def open_writes(connection: sa.Connection) -> list[OpenWrite]:
    """Transactions of this database, other than the asking one's, holding uncommitted writes."""
    _fresh_activity(connection)
    rows = connection.execute(
        sa.text(
            "SELECT pid, client_port, backend_xid::text AS xid, state, left(query, 160) AS query "
            "FROM pg_stat_activity WHERE datname = current_database() AND backend_xid IS NOT NULL "
            "AND client_port IS NOT NULL AND pid <> pg_backend_pid()"
        )
    ).all()
    return [OpenWrite(r.pid, r.client_port, int(r.xid), r.state or "", r.query or "") for r in rows]


def still_between_statements(connection: sa.Connection, write: OpenWrite) -> bool:
    """Whether the write's backend still waits for its client's next statement inside the same open
    transaction. Asked once the client is stopped (SIGSTOP): it can send nothing more, and what it had
    sent already (its COMMIT) would have made the backend active, or ended the transaction."""
    _fresh_activity(connection)
    row = connection.execute(
        sa.text("SELECT state, backend_xid::text AS xid FROM pg_stat_activity WHERE pid = :pid"),
        {"pid": write.backend_pid},
    ).first()
    return row is not None and row.state == IDLE_IN_TRANSACTION and row.xid == str(write.xid)


def backend_alive(connection: sa.Connection, backend_pid: int) -> bool:
    _fresh_activity(connection)
    return bool(
        connection.execute(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend_pid}
        ).scalar_one()
    )


def transaction_status(connection: sa.Connection, xid: int) -> str:
    """'committed', 'aborted' or 'in progress'. A fresh cluster is in xid epoch 0, so the 32-bit xid is
    also the full one pg_xact_status takes."""
    return str(
        connection.execute(
            sa.text("SELECT pg_xact_status(CAST(CAST(:xid AS text) AS xid8))"), {"xid": xid}
        ).scalar_one()
    )


def fate_once_gone(connection: sa.Connection, write: OpenWrite, timeout_s: float) -> str:
    """The transaction's outcome after its client was killed, once the backend has noticed (at once
    when idle in its transaction, after the statement when active), or as it stands after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while backend_alive(connection, write.backend_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return transaction_status(connection, write.xid)


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _local_ports_by_inode() -> dict[int, int]:
    ports: dict[int, int] = {}
    for table in _TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            ports[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return ports


def port_owners(pids: set[int]) -> dict[int, int]:
    """Local TCP port -> owning process, for the processes `pids`."""
    by_inode = _local_ports_by_inode()
    owners: dict[int, int] = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            port = by_inode.get(inode)
            if port is not None:
                owners[port] = pid
    return owners
