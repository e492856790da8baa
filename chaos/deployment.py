"""Dagster as production runs it, on this machine: HUB_ENV=prod, an instance on PostgreSQL, the queued run
coordinator, and the code server, the daemon and the webserver as separate processes.

The instance is deploy/dagster.prod.yaml with three changes a machine without Kubernetes needs:
runs are launched by the DefaultRunLauncher (each run its own process, started by the code server, the
shape K8sRunLauncher gives with a pod per run), compute logs stay on local disk, and pools count
runs, one at a time (the warehouse is chdb here, which opens its folder from one process at a time).
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaos.services import KAFKA_PARTITIONS, Services
from hub_pipelines import settings
from tests.services import free_port, port_open, start_process, stop_process, wait_until

BIN = Path(sys.executable).parent
SIGNING_SECRET = "chaos-signing-secret"
STRIPE_API_KEY = "sk_test_chaos"
CODE_LOCATION = "hub_pipelines"
# Runs in progress at once: a machine of a few cores, not a cluster (production allows 30, media 20).
RUNS_AT_ONCE = 6
MEDIA_RUNS_AT_ONCE = 3


class DeploymentFailed(RuntimeError):
    """A Dagster process did not come up."""


def instance_config(postgres_port: int) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        (settings.PROJECT_ROOT / "deploy" / "dagster.prod.yaml").read_text()
    )
    config.pop("run_launcher")
    config.pop("compute_logs")
    config["storage"]["postgres"]["postgres_db"]["params"] = {"application_name": "dagster"}
    config["concurrency"]["pools"] = {"granularity": "run", "default_limit": 1}
    runs = config["concurrency"]["runs"]
    runs["max_concurrent_runs"] = RUNS_AT_ONCE
    for limit in runs["tag_concurrency_limits"]:
        if limit.get("value") == "media":
            limit["limit"] = MEDIA_RUNS_AT_ONCE
    monitoring = config["run_monitoring"]
    # No pod to resume: a run whose worker died is failed and retried (run_retries).
    monitoring["max_resume_run_attempts"] = 0
    # Each run's process imports the code location; on a machine shared with other work that can take
    # minutes, and a run failed for it is a cause of no interest here.
    monitoring["start_timeout_seconds"] = 600
    monitoring["poll_interval_seconds"] = 5
    return config


@dataclass
class Deployment:
    root: Path
    services: Services
    environment: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    code_server_port: int = 0
    webserver_port: int = 0
    daemon_restarts: int = 0
    # Processes that exited on their own and were started again, as a pod's restart policy would.
    supervisor_restarts: list[str] = field(default_factory=list)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse"

    def prepare(self) -> None:
        services = self.services
        pg = services.postgres.server
        apis = services.apis
        self.dagster_home.mkdir(parents=True)
        (self.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(pg.port)))
        self.code_server_port = free_port()
        self.webserver_port = free_port()
        workspace = {
            "load_from": [
                {
                    "grpc_server": {
                        "host": "127.0.0.1",
                        "port": self.code_server_port,
                        "location_name": CODE_LOCATION,
                    }
                }
            ]
        }
        (self.root / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        pii_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.environment = {
            **{name: value for name, value in os.environ.items() if not name.startswith("HUB_")},
            "HUB_ENV": "prod",
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_USERNAME": pg.user,
            "DAGSTER_PG_PASSWORD": pg.password,
            "DAGSTER_PG_HOST": pg.host,
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_PG_PORT": str(pg.port),
            # A run's launch through the code server can take long on a loaded machine.
            "DAGSTER_GRPC_TIMEOUT_SECONDS": "300",
            # As deploy/helm/values.yaml sets for the code server (seeds 13 and 14 lost theirs at 30 s).
            "DAGSTER_GRPC_PROXY_HEARTBEAT_TTL_SECONDS": "300",
            "HUB_DATABASE_URL": pg.url,
            "HUB_PROD_WAREHOUSE_CHDB_PATH": str(self.warehouse_path),
            "HUB_S3_ENDPOINT_URL": services.s3.endpoint_url,
            "HUB_S3_ACCESS_KEY_ID": services.s3.access_key,
            "HUB_S3_SECRET_ACCESS_KEY": services.s3.secret_key,
            "HUB_KAFKA_BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
            "HUB_TOPIC_PARTITIONS": str(KAFKA_PARTITIONS),
            "HUB_REDIS_URL": services.redis.url,
            "HUB_CLAMD_HOST": services.clamd.host,
            "HUB_CLAMD_PORT": str(services.clamd.port),
            "HUB_CDN_PROVIDER": "none",
            "HUB_CDN_BASE_URL": "https://cdn.chaos.test",
            "HUB_MEDIA_WEBHOOK_URL": apis.media_webhook.url,
            "HUB_MEDIA_WEBHOOK_SECRET": "chaos-webhook-secret",
            "HUB_PAGERDUTY_ROUTING_KEY": "chaos-routing-key",
            "HUB_PAGERDUTY_EVENTS_URL": apis.pager.url.replace("/hooks/media", "/pagerduty"),
            "HUB_SLACK_WEBHOOK_URL": apis.pager.url.replace("/hooks/media", "/slack"),
            "HUB_STRIPE_API_KEY": STRIPE_API_KEY,
            "HUB_STRIPE_API_BASE": apis.stripe.base_url,
            "HUB_SMTP_HOST": "127.0.0.1",
            "HUB_SMTP_PORT": str(apis.smtp.port),
            "HUB_SMTP_STARTTLS": "false",
            "HUB_SMTP_USERNAME": "",
            "HUB_SMTP_PASSWORD": "",
            "HUB_SMS_ACCOUNT_SID": apis.sms.account_sid,
            "HUB_SMS_AUTH_TOKEN": apis.sms.auth_token,
            "HUB_SMS_FROM": "+15550009999",
            "HUB_SMS_BASE_URL": apis.sms.base_url,
            "HUB_ORDER_SIGNING_SECRET": SIGNING_SECRET,
            "HUB_PII_KEYS": f"chaos1:{pii_key}",
            # Every customer of the workload orders well under this: the limit is not under test here.
            "HUB_ORDER_RATE_LIMIT": "1000/minute",
            "HUB_DAGSTER_URL": f"http://127.0.0.1:{self.webserver_port}",
        }

    def run_cli(self, *args: str) -> None:
        done = subprocess.run(
            [str(BIN / "hub-pipelines"), *args],
            env=self.environment,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DeploymentFailed(f"hub-pipelines {' '.join(args)}: {done.stdout}\n{done.stderr}")

    def run_dagster(self, *args: str) -> None:
        done = subprocess.run(
            [str(BIN / "dagster"), *args], env=self.environment, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DeploymentFailed(f"dagster {' '.join(args)}: {done.stdout}\n{done.stderr}")

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = start_process(
            args, self.root / f"{name}.log", env=self.environment, cwd=settings.PROJECT_ROOT
        )
        self.processes[name] = process
        return process

    def start_code_server(self) -> None:
        process = self._start(
            "code-server",
            [
                str(BIN / "dagster"), "code-server", "start",
                "-m", "hub_pipelines.definitions", "--location-name", CODE_LOCATION,
                "-h", "127.0.0.1", "-p", str(self.code_server_port),
            ],
        )  # fmt: skip
        wait_until(
            lambda: port_open(self.code_server_port), "dagster code-server", timeout=300, process=process
        )

    def start_daemon(self) -> None:
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.root / "workspace.yaml")])

    def start_webserver(self) -> None:
        process = self._start(
            "webserver",
            [
                str(BIN / "dagster-webserver"), "-w", str(self.root / "workspace.yaml"),
                "-h", "127.0.0.1", "-p", str(self.webserver_port),
            ],
        )  # fmt: skip
        wait_until(lambda: port_open(self.webserver_port), "dagster-webserver", timeout=300, process=process)

    def restart_daemon(self) -> None:
        """SIGKILL of the daemon's process group and a fresh daemon, as a lost daemon pod is replaced."""
        stop_process(self.processes["daemon"], grace=0)
        self.start_daemon()
        self.daemon_restarts += 1

    def supervise(self, stop: threading.Event) -> None:
        """Start again a Dagster process that exited (the daemon exits when its threads stop heartbeating,
        say while PostgreSQL restarts), until `stop`."""
        starters = {
            "daemon": self.start_daemon,
            "webserver": self.start_webserver,
            "code-server": self.start_code_server,
        }
        while not stop.wait(2.0):
            for name, start in starters.items():
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    self.supervisor_restarts.append(
                        f"{time.strftime('%H:%M:%S')} {name} exited {process.returncode}"
                    )
                    start()

    def start(self) -> None:
        self.start_code_server()
        self.start_webserver()
        self.start_daemon()

    def stop(self) -> None:
        for name in ("daemon", "webserver", "code-server"):
            process = self.processes.get(name)
            if process is not None:
                stop_process(process, grace=20)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


CATALOG_STOCK = 1_000_000
FLASH_SALE_PRODUCT = "p-flash"
FLASH_SALE_PRICE = "9.99"


def bootstrap(deployment: Deployment, flash_sale_stock: int) -> None:
    """What a deploy does before the processes start: schema, catalog, buckets, topics, Dagster's tables."""
    from hub_pipelines.demo.feeder import DEMO_PRODUCTS
    from hub_pipelines.orders.catalog import add_missing_products
    from hub_pipelines.resources.media.media_settings import MediaSettings
    from hub_pipelines.resources.object_storage import S3ObjectStorage
    from hub_pipelines.resources.sql_database import PostgresDatabase

    deployment.run_cli("migrate")
    database = PostgresDatabase(url=deployment.services.postgres.server.url, migrate_schema=False)
    catalog = [
        (p, name, "USD", int(price.replace(".", "")), CATALOG_STOCK) for p, name, price in DEMO_PRODUCTS
    ]
    flash_price = int(FLASH_SALE_PRICE.replace(".", ""))
    catalog.append((FLASH_SALE_PRODUCT, "Flash sale kettle", "USD", flash_price, flash_sale_stock))
    add_missing_products(database, catalog)
    database.dispose()
    s3 = deployment.services.s3
    storage = S3ObjectStorage(
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )
    for bucket in [settings.UPLOADS_BUCKET, *MediaSettings().bucket_names()]:
        storage.create_bucket(bucket)
    deployment.services.kafka_topics_exist(
        [settings.ORDERS_TOPIC, settings.EVENTS_TOPIC, settings.ORDER_EVENTS_OUT_TOPIC]
    )
    deployment.run_dagster("instance", "migrate")
    # Pools count runs here (granularity: run). The warehouse pool admits three runs, as `make run`'s
    # does: an events follower, the successor that takes over from it, and one rollup or replay; chdb
    # opens its folder from one process at a time, and each run opening it waits for the holder
    # (ChdbWarehouse.lock_wait_seconds). Renditions are not limited beyond the media tag's.
    deployment.run_dagster("instance", "concurrency", "set", "warehouse", "3")
    deployment.run_dagster("instance", "concurrency", "set", "transcode", str(MEDIA_RUNS_AT_ONCE))
