"""The real servers a production deployment talks to, started on free loopback ports under one folder.

The suite's own starters (`tests/services/`) are reused; what the chaos run adds is a handle on each
server the nemesis restarts or takes down (PostgreSQL, Redis, and the broker: librdkafka's mock
cluster driven through its C API). The broker and the stand-ins for paid APIs (Stripe, SMTP, SMS,
PagerDuty and Slack, the media webhook) run in this process, which outlives every Dagster process.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import redis
from aiosmtpd.controller import Controller
from confluent_kafka import Producer
from psycopg import sql

from tests.fakes.sms_server import FakeSms
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.webhook_receiver import WebhookReceiver, running_webhook_receiver
from tests.services import free_port, start_process, stop_process, wait_until
from tests.services.clamd import ClamdAddress, start_clamd
from tests.services.kafka_mock_cluster import MockCluster
from tests.services.postgres import (
    SERVER_SETTINGS,
    PostgresServer,
    as_postgres,
    create_user_and_database,
    initdb,
    postgres_bin_dir,
)
from tests.services.seaweedfs import S3Server, accepts_encrypted_put, remove_grpc_sockets, weed_arguments

KAFKA_PARTITIONS = 4  # librdkafka's mock cluster makes every topic with 4 partitions


class ServiceFailed(RuntimeError):
    """A server of the deployment did not come up or back."""


@dataclass
class Postgres:
    """One cluster holding the application's database (`hub`) and Dagster's instance (`dagster`)."""

    root: Path
    server: PostgresServer
    restarts: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    def pg_ctl(self, *args: str) -> None:
        command = as_postgres(postgres_bin_dir() / "pg_ctl", *args, "-D", self.data)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = (self.root / "postgres.log").read_text(errors="replace")[-3000:]
            raise ServiceFailed(f"pg_ctl {' '.join(args)}: {done.stderr}\n{log}")

    def restart(self) -> None:
        """An immediate stop (crash recovery at start, like a lost node) and a start on the same port."""
        # With its log file named: a server started without one writes to pg_ctl's output, which
        # would never close.
        self.pg_ctl("restart", "-m", "immediate", "-w", "-t", "120", "-l", str(self.root / "postgres.log"))
        self.restarts += 1


@contextlib.contextmanager
def running_postgres(root: Path) -> Iterator[Postgres]:
    root.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    server = PostgresServer(
        host="127.0.0.1", port=free_port(), user="hub", password=secrets.token_hex(12), database="hub"
    )
    postgres = Postgres(root, server)
    initdb(postgres_bin_dir(), postgres.data)
    options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
    postgres.pg_ctl(
        "start",
        "-w",
        "-t",
        "60",
        "-l",
        str(root / "postgres.log"),
        "-o",
        f"-p {server.port} -k {root} {options}",
    )
    try:
        create_user_and_database(root, server)
        with server.connect(autocommit=True) as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE dagster OWNER {}").format(sql.Identifier(server.user))
            )
        yield postgres
    finally:
        with contextlib.suppress(ServiceFailed):
            postgres.pg_ctl("stop", "-m", "immediate")


@dataclass
class Redis:
    """redis-server with an append-only file written on every command, so a restart keeps what it had."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceFailed(
                "redis-server is not installed; install it with: apt-get install -y redis-server"
            )
        self.process = start_process(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--daemonize", "no", "--protected-mode", "no",
            ],
            self.folder / "redis.log",
        )  # fmt: skip
        wait_until(self._answers, "redis-server", timeout=60, process=self.process)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1

    def kill_client_connections(self) -> int:
        """CLIENT KILL of every normal client connection but the one asking."""
        return int(self.client().execute_command("CLIENT", "KILL", "TYPE", "normal"))


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[Redis]:
    folder.mkdir(parents=True)
    server = Redis(folder, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_seaweedfs(folder: Path) -> Iterator[S3Server]:
    """SeaweedFS's S3 API accepting SSE-S3 puts, as `tests/services/seaweedfs.py` starts it."""
    binary = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    (folder / "data").mkdir(parents=True)
    (folder / "tmp").mkdir()
    names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
    ports = {name: free_port() for name in names}
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3']}",
        access_key=f"chaos-{secrets.token_hex(4)}",
        secret_key=secrets.token_hex(16),
        data_folder=folder / "data",
    )
    identity = {
        "name": "chaos",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [identity]}))
    environment = {
        **os.environ,
        "TMPDIR": str(folder / "tmp"),
        "WEED_S3_SSE_KEK": secrets.token_hex(32),
        "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
    }
    process = start_process(
        weed_arguments(binary, folder, config, ports), folder / "weed.log", env=environment, cwd=folder
    )
    try:
        wait_until(lambda: accepts_encrypted_put(server), "seaweedfs S3", timeout=120, process=process)
        yield server
    finally:
        stop_process(process, grace=1.0)
        remove_grpc_sockets(ports)


class Mailbox:
    """aiosmtpd's handler: every message the SMTP server accepted."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class PaidApis:
    """Local servers that speak the paid providers' protocols."""

    stripe: FakeStripe
    sms: FakeSms
    smtp: Controller
    mailbox: Mailbox
    pager: WebhookReceiver
    media_webhook: WebhookReceiver
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def running_paid_apis(stripe_seed: int) -> Iterator[PaidApis]:
    from tests.fakes.stripe_server import Faults

    stripe = FakeStripe(faults=Faults(seed=stripe_seed)).start()
    sms = FakeSms().start()
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        with running_webhook_receiver() as pager, running_webhook_receiver() as media_webhook:
            yield PaidApis(stripe, sms, smtp, mailbox, pager, media_webhook)
    finally:
        smtp.stop()
        sms.stop()
        stripe.stop()


@dataclass
class Services:
    postgres: Postgres
    redis: Redis
    s3: S3Server
    clamd: ClamdAddress
    kafka: MockCluster
    apis: PaidApis

    def kafka_topics_exist(self, topics: list[str]) -> None:
        """The mock cluster makes a topic when a producer first asks for its metadata."""
        producer = Producer({"bootstrap.servers": self.kafka.bootstrap_servers})
        for topic in topics:
            found = producer.list_topics(topic, timeout=10).topics[topic]
            if len(found.partitions) != KAFKA_PARTITIONS:
                raise ServiceFailed(
                    f"the mock cluster made topic {topic!r} with {len(found.partitions)} partitions"
                )


@contextlib.contextmanager
def running_services(root: Path, seed: int) -> Iterator[Services]:
    """Every server of the deployment, stopped on exit."""
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(running_postgres(root / "postgres"))
        redis_server = stack.enter_context(running_redis(root / "redis"))
        s3 = stack.enter_context(running_seaweedfs(root / "seaweedfs"))
        clamd = stack.enter_context(start_clamd(root / "clamd"))
        apis = stack.enter_context(running_paid_apis(seed))
        kafka = MockCluster.start()
        stack.callback(kafka.stop)
        yield Services(postgres, redis_server, s3, clamd, kafka, apis)
