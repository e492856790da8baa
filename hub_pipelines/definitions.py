"""The code location: every asset, check, job and sensor, with resources for the environment chosen once here.

HUB_ENV=local (the default) runs on embedded parts with no servers: SQLite, chdb, folders for object
storage and topics, an in-process cache, and clamscan. HUB_ENV=prod reads every connection setting from
environment variables (see .env.example) and talks to PostgreSQL, ClickHouse, S3, Kafka, Redis and clamd.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from hub_pipelines import settings
from hub_pipelines.assets.analytics import raw_events
from hub_pipelines.assets.media import uploads as media_uploads
from hub_pipelines.assets.orders import order_events
from hub_pipelines.jobs import analytics_pipeline_job, media_pipeline_job, orders_pipeline_job
from hub_pipelines.resources.cache import InProcessCache, RedisCache
from hub_pipelines.resources.object_storage import LocalObjectStorage, S3ObjectStorage
from hub_pipelines.resources.sql_database import PostgresDatabase, SqliteDatabase
from hub_pipelines.resources.topics import KafkaTopics, LocalTopicLog
from hub_pipelines.resources.virus_scanner import EICAR_TEST_DATABASE, ClamdScanner, ClamscanScanner
from hub_pipelines.resources.warehouse import ChdbWarehouse, ClickHouseWarehouse
from hub_pipelines.sensors.topics import build_topic_sensor
from hub_pipelines.sensors.uploads import media_uploads_sensor


def local_signature_database() -> str:
    """ClamAV's own signatures when freshclam has fetched them, else the shipped EICAR test database.

    The shipped database detects only the EICAR test file: enough to show quarantine locally, never a
    substitute for real signatures (production scans with clamd and its updated databases).
    """
    system = Path(os.environ.get("HUB_CLAMAV_DATABASE", "/var/lib/clamav"))
    has_signatures = system.is_dir() and any(system.glob("*.c[lv]d"))
    return str(system if has_signatures else EICAR_TEST_DATABASE)


def local_resources() -> dict[str, Any]:
    root = settings.data_dir()
    return {
        "objects": LocalObjectStorage(root=str(root / "objects")),
        "database": SqliteDatabase(path=str(root / "hub.sqlite3"), migrate_schema=True),
        "warehouse": ChdbWarehouse(path=str(root / "warehouse")),
        "topics": LocalTopicLog(root=str(root / "topics")),
        "cache": InProcessCache(),
        "scanner": ClamscanScanner(database=local_signature_database()),
    }


def prod_resources() -> dict[str, Any]:
    return {
        "objects": S3ObjectStorage(
            s3=S3Resource(
                endpoint_url=os.environ.get("HUB_S3_ENDPOINT_URL") or None,
                region_name=os.environ.get("HUB_S3_REGION", "us-east-1"),
                aws_access_key_id=dg.EnvVar("HUB_S3_ACCESS_KEY_ID"),
                aws_secret_access_key=dg.EnvVar("HUB_S3_SECRET_ACCESS_KEY"),
            )
        ),
        "database": PostgresDatabase(url=dg.EnvVar("HUB_DATABASE_URL")),
        "warehouse": ClickHouseWarehouse(
            host=dg.EnvVar("HUB_CLICKHOUSE_HOST"),
            port=int(os.environ.get("HUB_CLICKHOUSE_PORT", "8123")),
            username=dg.EnvVar("HUB_CLICKHOUSE_USER"),
            password=dg.EnvVar("HUB_CLICKHOUSE_PASSWORD"),
            database=os.environ.get("HUB_CLICKHOUSE_DATABASE", "hub"),
        ),
        "topics": KafkaTopics(bootstrap_servers=dg.EnvVar("HUB_KAFKA_BOOTSTRAP_SERVERS")),
        "cache": RedisCache(url=dg.EnvVar("HUB_REDIS_URL")),
        "scanner": ClamdScanner(
            host=dg.EnvVar("HUB_CLAMD_HOST"), port=int(os.environ.get("HUB_CLAMD_PORT", "3310"))
        ),
    }


RESOURCES_BY_ENV = {"local": local_resources, "prod": prod_resources}


def build_definitions(resources: dict[str, Any], local: bool) -> dg.Definitions:
    """Everything in the code location, bound to one set of resources (tests bind their own)."""
    topic_sensors = [
        build_topic_sensor(
            "orders_topic_sensor",
            settings.ORDERS_TOPIC,
            orders_pipeline_job,
            ["orders", "order_events"],
            settings.ORDERS_PER_RUN,
            settings.SENSOR_INTERVAL_SECONDS,
        ),
        build_topic_sensor(
            "events_topic_sensor",
            settings.EVENTS_TOPIC,
            analytics_pipeline_job,
            ["analytics", "raw_events"],
            settings.EVENTS_PER_RUN,
            settings.SENSOR_INTERVAL_SECONDS,
        ),
    ]
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules([media_uploads, order_events, raw_events])],
        jobs=[media_pipeline_job, orders_pipeline_job, analytics_pipeline_job],
        sensors=[media_uploads_sensor, *topic_sensors],
        resources=resources,
        # Locally chdb admits one process per data path: each run executes its steps in one process.
        executor=dg.in_process_executor if local else dg.multiprocess_executor,
    )


defs = build_definitions(RESOURCES_BY_ENV[settings.hub_env()](), local=settings.hub_env() == "local")
