"""`hub-pipelines`: operator commands: the demo feeder, migrations, dead letters, PII key rotation and
restoring retired uploads."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from hub_pipelines import settings


def _local_feeder(seed: int | None):
    from hub_pipelines.demo.feeder import DemoFeeder, seed_demo_catalog
    from hub_pipelines.resources.media.media_settings import MediaSettings
    from hub_pipelines.resources.object_storage import LocalObjectStorage
    from hub_pipelines.resources.sql_database import SqliteDatabase
    from hub_pipelines.resources.topics import LocalTopicLog

    root = settings.data_dir()
    # The local ledger's database (as definitions.local_resources names it) must know the products
    # the demo's orders buy.
    seed_demo_catalog(SqliteDatabase(path=str(root / "hub.sqlite3"), migrate_schema=True))
    objects = LocalObjectStorage(root=str(root / "objects"))
    for bucket in [settings.UPLOADS_BUCKET, *MediaSettings().bucket_names()]:
        objects.create_bucket(bucket)
    return DemoFeeder(
        objects=objects,
        topics=LocalTopicLog(root=str(root / "topics")),
        uploads_bucket=settings.UPLOADS_BUCKET,
        uploads_prefix=settings.UPLOADS_PREFIX,
        orders_topic=settings.ORDERS_TOPIC,
        events_topic=settings.EVENTS_TOPIC,
        announcements_topic=settings.ORDER_EVENTS_OUT_TOPIC,
        signing_secret=settings.order_signing_secret(),
        partitions=settings.TOPIC_PARTITIONS,
        seed=seed,
    )


def _upload_pacer(bound: int):
    """Paced by the Dagster instance of DAGSTER_HOME (the one `make run` serves); None without one."""
    if not settings.dagster_home():
        return None
    import dagster as dg

    from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME
    from hub_pipelines.demo.pacing import UploadPacer
    from hub_pipelines.landing.uploads import partition_key_for
    from hub_pipelines.sensors.media import unfinished_media_runs

    instance = dg.DagsterInstance.get()
    return UploadPacer(
        bound=bound,
        unfinished_media_runs=lambda: unfinished_media_runs(instance),
        registered=lambda key: instance.has_dynamic_partition(
            UPLOADS_PARTITIONS_NAME, partition_key_for(key, settings.UPLOADS_PREFIX)
        ),
    )


def demo(args: argparse.Namespace) -> int:
    if settings.hub_env() != "local":
        print("the demo feeder writes to the local environment only (HUB_ENV=local)", file=sys.stderr)
        return 2
    feeder = _local_feeder(args.seed)
    pacer = _upload_pacer(args.max_media_backlog)
    for stop in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C on `make run` is the normal way out
        signal.signal(stop, lambda *_: sys.exit(0))
    rounds = 0
    while True:
        keys: list[str] = []
        skipped = ""
        if rounds % args.uploads_every == 0:
            due, backlog = pacer.uploads_due() if pacer else (True, 0)
            if due:
                keys = feeder.drop_uploads()
                if pacer:
                    pacer.uploaded(keys)
            else:
                skipped = f" (uploads skipped: media backlog {backlog} > {args.max_media_backlog})"
        orders = feeder.send_orders(args.orders)
        events = feeder.send_events(args.events)
        print(
            f"demo: {len(keys)} uploads{skipped}, {orders} order events, {events} analytics events",
            flush=True,
        )
        rounds += 1
        if not args.trickle:
            return 0
        time.sleep(args.interval)


class DatabaseNotConfigured(RuntimeError):
    """HUB_ENV=prod without HUB_DATABASE_URL."""


def _database():
    """The SQL database of HUB_ENV: PostgreSQL at HUB_DATABASE_URL in prod, the local SQLite file otherwise."""
    from hub_pipelines.resources.sql_database import PostgresDatabase, SqliteDatabase

    if settings.hub_env() == "prod":
        url = settings.database_url()
        if not url:
            raise DatabaseNotConfigured("HUB_DATABASE_URL is not set")
        return PostgresDatabase(url=url)
    return SqliteDatabase(path=str(settings.data_dir() / "hub.sqlite3"))


def _object_storage():
    """The object storage of HUB_ENV: S3 from the HUB_S3_* variables in prod, the local folders otherwise."""
    if settings.hub_env() == "prod":
        from hub_pipelines.resources.object_storage import S3ObjectStorage

        s3 = settings.s3_connection()
        return S3ObjectStorage(
            endpoint_url=s3.endpoint_url,
            region_name=s3.region_name,
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=s3.secret_access_key,
        )
    from hub_pipelines.resources.object_storage_local import LocalObjectStorage

    return LocalObjectStorage(root=str(settings.data_dir() / "objects"))


def uploads_restore(args: argparse.Namespace) -> int:
    """Add retired uploads back to the Dagster instance of DAGSTER_HOME, ready for a re-run."""
    from datetime import UTC, datetime

    import dagster as dg

    from hub_pipelines.assets.media.partitions import originals_layout
    from hub_pipelines.housekeeping import InstanceUploadPartitions
    from hub_pipelines.landing.upload_retention import UploadNotRecorded, restore_uploads

    try:
        restored = restore_uploads(
            _database(),
            _object_storage().bucket(settings.UPLOADS_BUCKET),
            InstanceUploadPartitions(dg.DagsterInstance.get()),
            originals_layout(),
            args.partition_keys,
            now=datetime.now(UTC),
        )
    except UploadNotRecorded as unknown:
        print(f"uploads restore: {unknown}", file=sys.stderr)
        return 1
    for upload in restored:
        where = (
            f"original at {upload.original_key!r}"
            if upload.original_key
            else "no original left to run on: a quarantined upload's is in the quarantine bucket"
        )
        print(
            f"uploads restore: partition {upload.partition_key!r} is registered again ({where}); "
            "materialize it from the media/uploads asset page or with "
            f"`dagster asset materialize -m hub_pipelines.definitions --select 'media/uploads+' "
            f"--partition '{upload.partition_key}'`"
        )
    return 0 if all(upload.original_key for upload in restored) else 1


def migrate(args: argparse.Namespace) -> int:
    """Bring the SQL database of HUB_ENV to the newest schema; production runs this as a deploy step."""
    from hub_pipelines.core.schema import upgrade_schema

    engine = _database().engine
    upgrade_schema(engine)
    print(f"migrate: {engine.url.render_as_string(hide_password=True)} is at the newest schema")
    return 0


def dead_letters_show(args: argparse.Namespace) -> int:
    """Print dead letters as JSON lines, payloads decrypted: plaintext PII on the operator's terminal."""
    from hub_pipelines.orders.dead_letters import read_dead_letters

    letters = read_dead_letters(_database(), args.ids or None, source=args.source, limit=args.limit)
    for letter in letters:
        print(json.dumps(letter.describe(), ensure_ascii=False))
    missing = set(args.ids) - {letter.id for letter in letters}
    if missing:
        print(f"dead-letters show: no dead letter {sorted(missing)}", file=sys.stderr)
        return 1
    return 0


def dead_letters_replay(args: argparse.Namespace) -> int:
    """Hand rejected order events back to the ledger (see hub_pipelines.orders.dead_letters)."""
    from hub_pipelines.orders.dead_letters import DeadLetterNotReplayable, replay_dead_letter

    database, failed = _database(), 0
    for dead_letter_id in args.ids:
        try:
            letter = replay_dead_letter(database, dead_letter_id)
        except DeadLetterNotReplayable as refused:
            print(f"dead-letters replay: {refused}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"dead-letters replay: dead letter {letter.id} ({letter.topic} partition {letter.partition} "
            f"offset {letter.offset}) goes to the next ledger batch"
        )
    return 1 if failed else 0


def rotate_keys(args: argparse.Namespace) -> int:
    """Re-seal every PII ciphertext under the first key of HUB_PII_KEYS."""
    from hub_pipelines.orders.key_rotation import rotate_keys as reseal_rows

    report = reseal_rows(_database(), batch_size=args.batch_size)
    print(
        f"rotate-keys: re-sealed {report.inbox_rows} inbox rows, {report.dead_letters} dead letters, "
        f"{report.orders} orders under the newest key"
    )
    if report.unreadable:
        print(
            f"rotate-keys: {len(report.unreadable)} rows do not open under their key and keep it "
            f"(corrupted at rest; keep the old key until they are dealt with): {', '.join(report.unreadable)}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub-pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="feed the local environment with demo uploads and events")
    demo_parser.add_argument("--trickle", action="store_true", help="keep feeding every --interval seconds")
    demo_parser.add_argument("--interval", type=float, default=10.0)
    demo_parser.add_argument("--orders", type=int, default=50, help="order events per round")
    demo_parser.add_argument("--events", type=int, default=2000, help="analytics events per round")
    demo_parser.add_argument("--uploads-every", type=int, default=6, help="drop uploads every N rounds")
    demo_parser.add_argument(
        "--max-media-backlog",
        type=int,
        default=6,
        help="skip a round's uploads while more media runs than this are queued, running or unrequested",
    )
    demo_parser.add_argument("--seed", type=int, default=None)
    demo_parser.set_defaults(handler=demo)
    migrate_parser = commands.add_parser("migrate", help="bring the SQL database to the newest schema")
    migrate_parser.set_defaults(handler=migrate)
    dead_letters = commands.add_parser("dead-letters", help="inspect or replay dead letters (decrypted)")
    dead_letter_commands = dead_letters.add_subparsers(dest="dead_letters_command", required=True)
    show = dead_letter_commands.add_parser("show", help="print dead letters with their payload decrypted")
    show.add_argument("ids", type=int, nargs="*", help="dead letter ids (default: the newest --limit)")
    show.add_argument("--source", help="only this source, e.g. orders-intake")
    show.add_argument("--limit", type=int, default=20)
    show.set_defaults(handler=dead_letters_show)
    replay = dead_letter_commands.add_parser("replay", help="hand rejected order events back to the ledger")
    replay.add_argument("ids", type=int, nargs="+")
    replay.set_defaults(handler=dead_letters_replay)
    rotate = commands.add_parser("rotate-keys", help="re-seal PII under the first key of HUB_PII_KEYS")
    rotate.add_argument("--batch-size", type=int, default=500)
    rotate.set_defaults(handler=rotate_keys)
    uploads = commands.add_parser("uploads", help="media uploads kept in SQL after their partition retired")
    upload_commands = uploads.add_subparsers(dest="uploads_command", required=True)
    restore = upload_commands.add_parser(
        "restore", help="register retired uploads' partitions again for a re-run"
    )
    restore.add_argument("partition_keys", nargs="+", metavar="partition_key")
    restore.set_defaults(handler=uploads_restore)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except DatabaseNotConfigured as missing:
        print(f"{args.command}: {missing}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
