"""PostgreSQL for the test suite: a throwaway cluster in a temporary folder, one per session.

`postgres_server` (session) initdb's a cluster owned by the user running the tests, or by the
`postgres` user when that is root (PostgreSQL refuses to run as root), starts it on a free loopback port with its unix socket in the same folder, tuned for
speed over durability, and creates a password-authenticated user and database.
`postgres_database` (function) gives each test its own fresh, empty database, dropped afterwards.

Set `HUB_TEST_POSTGRES_URL` (for example `postgresql://hub:secret@127.0.0.1:5432/hub`) to use an
existing server instead; its user needs the CREATEDB privilege for `postgres_database`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.services import free_port, require_binary

INSTALL = "apt-get install -y postgresql"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
}


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """Where a test database is and how to log in."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def sqlalchemy_url(self, driver: str) -> str:
        url = sa.URL.create(
            f"postgresql+{driver}",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        )
        return url.render_as_string(hide_password=False)

    @property
    def url(self) -> str:
        """SQLAlchemy URL through psycopg 3."""
        return self.sqlalchemy_url("psycopg")

    @property
    def psycopg2_url(self) -> str:
        """SQLAlchemy URL through psycopg2, as dagster-postgres expects."""
        return self.sqlalchemy_url("psycopg2")

    def connect(self, **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            **kwargs,  # type: ignore[arg-type]
        )

    def with_database(self, database: str) -> PostgresServer:
        return dataclasses.replace(self, database=database)


def postgres_bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    found = require_binary("initdb", install=INSTALL, search=[str(Path(c).parent) for c in candidates[-1:]])
    return Path(found).parent


def as_postgres(*args: str | Path) -> list[str]:
    command = list(map(str, args))
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    external = os.environ.get("HUB_TEST_POSTGRES_URL")
    if external:
        url = sa.make_url(external)
        yield PostgresServer(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password or "",
            database=url.database or "postgres",
        )
        return

    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="hub-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    data = root / "data"
    log = root / "postgres.log"
    pg_ctl = bin_dir / "pg_ctl"
    server = PostgresServer(
        host="127.0.0.1", port=free_port(), user="hub", password="hub-test-password", database="hub"
    )
    try:
        initdb(bin_dir, data)
        options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        started = subprocess.run(
            as_postgres(
                pg_ctl,
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                data,
                "-l",
                log,
                "-o",
                f"-p {server.port} -k {root} {options}",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(
                f"pg_ctl start failed with code {started.returncode}:\n{started.stderr}\n{server_log}"
            )
        create_user_and_database(root, server)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                as_postgres(pg_ctl, "stop", "-m", "fast", "-D", data), capture_output=True, check=False
            )
        shutil.rmtree(root, ignore_errors=True)


def initdb(bin_dir: Path, data: Path) -> None:
    command = as_postgres(
        bin_dir / "initdb",
        "-D",
        data,
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed with code {result.returncode}:\n{result.stdout}\n{result.stderr}")


def create_user_and_database(socket_dir: Path, server: PostgresServer) -> None:
    """The test user logs in with a password over TCP; the superuser only through the local socket."""
    with psycopg.connect(
        host=str(socket_dir), port=server.port, user="postgres", dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(server.user), sql.Literal(server.password)
            )
        )
        # DROP DATABASE ... WITH (FORCE) must also end an autovacuum worker that happens to be
        # vacuuming the test's database; it runs under no role, so only pg_signal_backend may end it.
        admin.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(server.user)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(server.database), sql.Identifier(server.user)
            )
        )


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A fresh, empty database on the session's server, owned by its user, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with postgres_server.connect(autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield postgres_server.with_database(name)
    finally:
        with postgres_server.connect(autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
