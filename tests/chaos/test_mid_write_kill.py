"""The nemesis's kill inside a write, on its own: a process holding uncommitted PostgreSQL writes is
found from its backend, traced to its process by the connection's port, killed with SIGKILL, and its
transaction ends aborted with nothing of it stored."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from chaos import writes

WRITER = """
import sys
import psycopg
with psycopg.connect(sys.argv[1]) as connection:
    connection.execute("INSERT INTO kill_target VALUES (1)")
    print("written", flush=True)
    sys.stdin.read()
    connection.commit()
"""


@pytest.fixture
def database(postgres_database) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_database.url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE kill_target (n int)"))
    try:
        yield engine
    finally:
        engine.dispose()


def libpq_url(engine: sa.Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def writer_inside_a_write(database: sa.Engine) -> Iterator[tuple[subprocess.Popen[str], writes.OpenWrite]]:
    """A process holding an uncommitted write (it commits once it reads a line), and its write as the
    nemesis finds it; the process is killed on the way out if it still runs."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, libpq_url(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "written"
        with database.connect() as connection:
            owners = writes.port_owners({writer.pid})
            (write,) = [w for w in writes.open_writes(connection) if owners.get(w.client_port) == writer.pid]
        yield writer, write
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()


def test_run_worker_killed_inside_a_write_leaves_its_transaction_aborted(database):
    with writer_inside_a_write(database) as (writer, write), database.connect() as connection:
        os.kill(writer.pid, signal.SIGKILL)
        fate = writes.fate_once_gone(connection, write, timeout_s=60)
        stored = connection.execute(sa.text("SELECT count(*) FROM kill_target")).scalar_one()
    assert (fate, stored) == ("aborted", 0)


def test_a_transaction_that_only_read_is_not_a_write_in_flight(database):
    with database.connect() as reader, database.connect() as watcher:
        reader.execute(sa.text("SELECT count(*) FROM kill_target"))
        assert writes.open_writes(watcher) == []
        reader.execute(sa.text("INSERT INTO kill_target VALUES (2)"))
        assert [w.state for w in writes.open_writes(watcher)] == ["idle in transaction"]
        reader.commit()
        assert writes.open_writes(watcher) == []


def test_a_write_stays_between_statements_until_its_stopped_client_goes_on_and_commits(database):
    with writer_inside_a_write(database) as (writer, write), database.connect() as connection:
        os.kill(writer.pid, signal.SIGSTOP)
        assert writer.stdin is not None
        # Its COMMIT waits for the newline, which a stopped process cannot read.
        writer.stdin.write("commit\n")
        writer.stdin.close()
        stopped_inside = writes.still_between_statements(connection, write)
        os.kill(writer.pid, signal.SIGCONT)
        assert writer.wait(timeout=60) == 0
        after_commit = writes.still_between_statements(connection, write)
        fate = writes.transaction_status(connection, write.xid)
    assert (stopped_inside, after_commit, fate) == (True, False, "committed")
