"""The code location: every asset, check, job and sensor, with resources for the environment chosen once here.

HUB_ENV=local (the default) runs on embedded parts with no servers: SQLite, chdb, folders for object
storage and topics, an in-process cache (or the Redis `make run` starts on a Unix socket, named by
HUB_REDIS_URL), and clamscan. HUB_ENV=prod reads every connection setting from
environment variables (see .env.example) and talks to PostgreSQL, ClickHouse, S3, Kafka, Redis and clamd.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from hub_pipelines import assets, settings
from hub_pipelines.assets.analytics.daily_rollups import daily_rollups_job
from hub_pipelines.assets.catalog import cataloged
from hub_pipelines.assets.tracing import enable_tracing
from hub_pipelines.deploy_k8s import media_k8s_job_executor
from hub_pipelines.housekeeping import (
    media_uploads_retention_job,
    media_uploads_retention_schedule,
    order_events_retention_job,
    order_events_retention_schedule,
)
from hub_pipelines.jobs import (
    analytics_pipeline_job,
    build_media_pipeline_job,
    media_pipeline_job,
    orders_downstream_job,
    orders_pipeline_job,
)
from hub_pipelines.json_logs import definitions_loggers
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse, ClickHouseWarehouse
from hub_pipelines.resources.cache import RedisCache
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.local_cache import local_cache
from hub_pipelines.resources.media.cdn import CloudFrontCdn, NoCdn
from hub_pipelines.resources.media.media_settings import MediaSettings
from hub_pipelines.resources.media.virus_scanner import EICAR_TEST_DATABASE, ClamdScanner, ClamscanScanner
from hub_pipelines.resources.media.webhook import FileWebhook, HttpWebhook
from hub_pipelines.resources.notifier import PAGERDUTY_EVENTS_URL, LogNotifier, PagerDutySlackNotifier
from hub_pipelines.resources.object_storage import S3ObjectStorage
from hub_pipelines.resources.object_storage_local import LocalObjectStorage
from hub_pipelines.resources.orders.customer_notifications import CustomerNotifier, LocalNotificationFile
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings
from hub_pipelines.resources.orders.payment_gateway import ApprovingLocalGateway, StripeGateway
from hub_pipelines.resources.sql_database import PostgresDatabase, SqliteDatabase
from hub_pipelines.resources.topics import LocalTopicLog
from hub_pipelines.sensors.analytics import (
    analytics_automation,
    analytics_late_days_sensor,
    build_stream_observer,
)
from hub_pipelines.sensors.media import media_uploads_sensor
from hub_pipelines.sensors.orders import (
    build_orders_reconcile_sensor,
    orders_automation,
    orders_downstream_sensor,
)
from hub_pipelines.sensors.run_failures import run_failure_alerts
from hub_pipelines.sensors.topics import build_topic_sensor


def local_signature_database() -> str:
    """ClamAV's own signatures when freshclam has fetched them, else the shipped EICAR test database.

    The shipped database detects only the EICAR test file: enough to show quarantine locally, never a
    substitute for real signatures (production scans with clamd and its updated databases).
    """
    system = Path(os.environ.get("HUB_CLAMAV_DATABASE", "/var/lib/clamav"))
    has_signatures = system.is_dir() and any(system.glob("*.c[lv]d"))
    return str(system if has_signatures else EICAR_TEST_DATABASE)


LOCAL_MEDIA = MediaSettings()


def local_resources() -> dict[str, Any]:
    root = settings.data_dir()
    return {
        "objects": LocalObjectStorage(root=str(root / "objects")),
        "database": SqliteDatabase(path=str(root / "hub.sqlite3"), migrate_schema=True),
        "warehouse": ChdbWarehouse(
            path=str(root / "warehouse"), lock_wait_seconds=settings.WAREHOUSE_LOCK_WAIT_SECONDS
        ),
        "topics": LocalTopicLog(root=str(root / "topics")),
        "cache": local_cache(),
        "scanner": ClamscanScanner(database=local_signature_database()),
        "cdn": NoCdn(base_url=f"file://{root}/objects/{LOCAL_MEDIA.origin_bucket}"),
        "webhook": FileWebhook(path=str(root / "webhooks.jsonl"), secret="local-webhook-secret"),
        "media_settings": LOCAL_MEDIA,
        "pager": LogNotifier(),
        "payment_gateway": ApprovingLocalGateway(),
        "customer_notifier": LocalNotificationFile(path=str(root / "notifications.jsonl")),
        "order_settings": OrderLedgerSettings(
            hmac_secret=settings.order_signing_secret(),
            pii_keys=settings.pii_keys(),
            orders_topic=settings.ORDERS_TOPIC,
            order_events_topic=settings.ORDER_EVENTS_OUT_TOPIC,
        ),
    }


def prod_resources() -> dict[str, Any]:
    s3 = settings.s3_connection()
    return {
        "objects": S3ObjectStorage(
            endpoint_url=s3.endpoint_url,
            region_name=s3.region_name,
            aws_access_key_id=dg.EnvVar("HUB_S3_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("HUB_S3_SECRET_ACCESS_KEY"),
        ),
        "database": PostgresDatabase(url=dg.EnvVar("HUB_DATABASE_URL")),
        "warehouse": prod_warehouse(),
        "topics": KafkaTopics(bootstrap_servers=dg.EnvVar("HUB_KAFKA_BOOTSTRAP_SERVERS")),
        "cache": RedisCache(url=dg.EnvVar("HUB_REDIS_URL")),
        "scanner": ClamdScanner(
            host=dg.EnvVar("HUB_CLAMD_HOST"), port=int(os.environ.get("HUB_CLAMD_PORT", "3310"))
        ),
        "cdn": prod_cdn(),
        "webhook": HttpWebhook(
            url=dg.EnvVar("HUB_MEDIA_WEBHOOK_URL"), secret=dg.EnvVar("HUB_MEDIA_WEBHOOK_SECRET")
        ),
        "media_settings": prod_media_settings(),
        "pager": PagerDutySlackNotifier(
            pagerduty_routing_key=dg.EnvVar("HUB_PAGERDUTY_ROUTING_KEY"),
            slack_webhook_url=dg.EnvVar("HUB_SLACK_WEBHOOK_URL"),
            pagerduty_url=os.environ.get("HUB_PAGERDUTY_EVENTS_URL") or PAGERDUTY_EVENTS_URL,
        ),
        "payment_gateway": StripeGateway(
            api_key=dg.EnvVar("HUB_STRIPE_API_KEY"),
            api_base=os.environ.get("HUB_STRIPE_API_BASE") or None,
            breaker_redis_url=dg.EnvVar("HUB_REDIS_URL"),
        ),
        "customer_notifier": CustomerNotifier(
            smtp_host=dg.EnvVar("HUB_SMTP_HOST"),
            smtp_port=int(os.environ.get("HUB_SMTP_PORT", "587")),
            smtp_starttls=os.environ.get("HUB_SMTP_STARTTLS", "true").lower() != "false",
            smtp_username=dg.EnvVar("HUB_SMTP_USERNAME"),
            smtp_password=dg.EnvVar("HUB_SMTP_PASSWORD"),
            email_from=os.environ.get("HUB_ORDER_EMAIL_FROM", "orders@example.com"),
            sms_account_sid=dg.EnvVar("HUB_SMS_ACCOUNT_SID"),
            sms_auth_token=dg.EnvVar("HUB_SMS_AUTH_TOKEN"),
            sms_from=dg.EnvVar("HUB_SMS_FROM"),
            sms_base_url=os.environ.get("HUB_SMS_BASE_URL", "https://api.twilio.com"),
        ),
        "order_settings": OrderLedgerSettings(
            hmac_secret=dg.EnvVar("HUB_ORDER_SIGNING_SECRET"),
            jwt_hs256_secret=os.environ.get("HUB_ORDER_JWT_HS256_SECRET") or None,
            jwt_rs256_public_key=os.environ.get("HUB_ORDER_JWT_RS256_PUBLIC_KEY") or None,
            pii_keys=dg.EnvVar("HUB_PII_KEYS"),
            rate_limit=os.environ.get("HUB_ORDER_RATE_LIMIT", "30/minute"),
            rate_limit_storage_uri=dg.EnvVar("HUB_REDIS_URL"),
            orders_topic=settings.ORDERS_TOPIC,
            order_events_topic=settings.ORDER_EVENTS_OUT_TOPIC,
            pushgateway_url=os.environ.get("HUB_PUSHGATEWAY_URL") or None,
        ),
    }


def prod_warehouse() -> ChdbWarehouse | ClickHouseWarehouse:
    if settings.PROD_WAREHOUSE_CHDB_PATH is not None:
        return ChdbWarehouse(
            path=settings.PROD_WAREHOUSE_CHDB_PATH, lock_wait_seconds=settings.WAREHOUSE_LOCK_WAIT_SECONDS
        )
    return ClickHouseWarehouse(
        host=dg.EnvVar("HUB_CLICKHOUSE_HOST"),
        port=int(os.environ.get("HUB_CLICKHOUSE_PORT", "8123")),
        username=dg.EnvVar("HUB_CLICKHOUSE_USER"),
        password=dg.EnvVar("HUB_CLICKHOUSE_PASSWORD"),
        database=os.environ.get("HUB_CLICKHOUSE_DATABASE", "hub"),
    )


def prod_cdn() -> NoCdn | CloudFrontCdn:
    if os.environ.get("HUB_CDN_PROVIDER", "cloudfront") == "none":
        return NoCdn(base_url=dg.EnvVar("HUB_CDN_BASE_URL"))
    return CloudFrontCdn(
        distribution_id=dg.EnvVar("HUB_CDN_DISTRIBUTION_ID"), base_url=dg.EnvVar("HUB_CDN_BASE_URL")
    )


def prod_media_settings() -> MediaSettings:
    defaults = MediaSettings()
    regions = os.environ.get("HUB_MEDIA_REGION_BUCKETS")
    return MediaSettings(
        staging_bucket=os.environ.get("HUB_MEDIA_STAGING_BUCKET", defaults.staging_bucket),
        quarantine_bucket=os.environ.get("HUB_MEDIA_QUARANTINE_BUCKET", defaults.quarantine_bucket),
        origin_bucket=os.environ.get("HUB_MEDIA_ORIGIN_BUCKET", defaults.origin_bucket),
        region_buckets=json.loads(regions) if regions else defaults.region_buckets,
        published_prefix=os.environ.get("HUB_MEDIA_PUBLISHED_PREFIX", defaults.published_prefix),
        replication_concurrency=int(
            os.environ.get("HUB_MEDIA_REPLICATION_CONCURRENCY", defaults.replication_concurrency)
        ),
    )


RESOURCES_BY_ENV = {"local": local_resources, "prod": prod_resources}


def build_definitions(resources: dict[str, Any], local: bool) -> dg.Definitions:
    """Everything in the code location, bound to one set of resources (tests bind their own)."""
    topic_sensors = [
        build_topic_sensor(
            "orders_topic_sensor",
            settings.ORDERS_TOPIC,
            orders_pipeline_job.name,
            ["orders", "order_events"],
            settings.ORDERS_PER_RUN,
            settings.SENSOR_INTERVAL_SECONDS,
            follow_seconds=settings.ORDERS_FOLLOW_SECONDS,
            follow_longest_seconds=settings.ORDERS_FOLLOW_LONGEST_SECONDS,
            lanes=settings.topic_lanes(settings.ORDERS_TOPIC),
            lane_ops=["orders__order_ledger"],
            max_runtime_seconds=settings.ORDERS_FOLLOW_LONGEST_SECONDS + settings.LANDING_RUN_SPARE_SECONDS,
        ),
        build_topic_sensor(
            "events_topic_sensor",
            settings.EVENTS_TOPIC,
            analytics_pipeline_job.name,
            ["analytics", "raw_events"],
            settings.EVENTS_PER_RUN,
            settings.SENSOR_INTERVAL_SECONDS,
            follow_seconds=settings.EVENTS_FOLLOW_SECONDS,
            follow_longest_seconds=settings.EVENTS_FOLLOW_LONGEST_SECONDS,
            handoff_lead_seconds=settings.EVENTS_HANDOFF_LEAD_SECONDS,
            lanes=settings.topic_lanes(settings.EVENTS_TOPIC),
            max_runtime_seconds=settings.EVENTS_FOLLOW_LONGEST_SECONDS
            + settings.WAREHOUSE_LOCK_WAIT_SECONDS
            + settings.LANDING_RUN_SPARE_SECONDS,
        ),
    ]
    return dg.Definitions(
        assets=cataloged(dg.load_assets_from_package_module(assets)),
        asset_checks=dg.load_asset_checks_from_package_module(assets),
        jobs=[
            # In production each media step (a transcode above all) gets its own sized pod.
            media_pipeline_job if local else build_media_pipeline_job(media_k8s_job_executor),
            orders_pipeline_job,
            orders_downstream_job,
            analytics_pipeline_job,
            daily_rollups_job,
            order_events_retention_job,
            media_uploads_retention_job,
        ],
        schedules=[order_events_retention_schedule, media_uploads_retention_schedule],
        sensors=[
            media_uploads_sensor,
            *topic_sensors,
            orders_downstream_sensor,
            build_orders_reconcile_sensor(settings.ORDERS_RECONCILE_AFTER_SECONDS),
            analytics_late_days_sensor,
            build_stream_observer(settings.EVENTS_TOPIC, settings.SENSOR_INTERVAL_SECONDS),
            run_failure_alerts,
            orders_automation,
            analytics_automation,
        ],
        resources=resources,
        loggers=definitions_loggers(),
        # Locally chdb admits one process per data path: each run executes its steps in one process.
        executor=dg.in_process_executor if local else dg.multiprocess_executor,
    )


# Every process that loads the code location (code server, daemon, each run worker) exports its own
# spans; the sensor-to-run link travels in run tags (see assets/tracing.py).
enable_tracing(os.environ.get("HUB_OTLP_ENDPOINT") or None)
defs = build_definitions(RESOURCES_BY_ENV[settings.hub_env()](), local=settings.runs_steps_in_one_process())
