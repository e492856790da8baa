"""Media partitions at scale: the uploads sensor's tick, the asset page's partition query and the
partition listing with 10k, 100k and 1M uploads, without and with the retention.

Without the retention Dagster holds one dynamic partition per upload ever made; with it
(`media_uploads_retention_job`) only those of uploads settled in the last HUB_UPLOADS_RETENTION_DAYS
days: at `--uploads-per-day`, min(N, days x per day). Settled originals sit under the settled prefix,
which the sensor does not list (their files are not written: nothing measured reads them);
`--listed-originals` puts all N under the uploads prefix instead, as before settled originals were
set aside, to show what the sensor's listing cost then.

Per scenario, in a fresh Dagster instance (SQLite under a temporary DAGSTER_HOME, or dagster-postgres
on a throwaway PostgreSQL server with `--postgres`):
1. Registers the held partitions as the daemon applies the sensor's requests: `add_dynamic_partitions`
   with batches of HUB_UPLOADS_PER_TICK keys (`--setup-batch` more per call to set up 1M sooner; the
   ticks' own registrations are always one tick's batch).
2. Sensor tick: `--ticks` evaluations of `media_uploads_sensor` on the local object store (the local
   deployment's), each after HUB_UPLOADS_PER_TICK new uploads arrive as files, whose partitions are
   then registered as the daemon would (no runs: the arrivals stay listed, a growing backlog). A tick
   over `--tick-budget` seconds is stopped and reported as such.
3. Partition listing: `get_dynamic_partitions` of the uploads partitions (what the UI lists).
4. Asset page: `dagster-webserver` serving `hub_pipelines.definitions` on this instance, and the
   `PartitionHealthQuery` the media/uploads asset page issues (copied from Dagster's UI,
   ui-core/src/assets/usePartitionHealthData.tsx), `--queries` times.
No materializations are recorded (at ~70 ms per event on this machine, 1M would take a day), so the
query's cost is that of the partition keys, not of per-partition events.

Run: `uv run python bench/media_partitions.py [--sizes 10000,100000,1000000] [--postgres]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "bench"))

import dagster as dg  # noqa: E402

from hub_pipelines import settings  # noqa: E402
from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME  # noqa: E402
from hub_pipelines.landing.uploads import UploadCursor, partition_key_for  # noqa: E402
from hub_pipelines.resources.object_storage_local import LocalObjectStorage  # noqa: E402
from hub_pipelines.resources.sql_database import SqliteDatabase  # noqa: E402
from hub_pipelines.sensors.media import media_uploads_sensor  # noqa: E402

PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
            }
          }
        }
      }
    }
  }
}
"""


class TickOverBudget(Exception):
    pass


def _over_budget(signum: int, frame: FrameType | None) -> None:
    raise TickOverBudget


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def upload_name(index: int) -> str:
    return f"{index // 10_000:03d}/{index:07d}.jpg"


def drop_originals(uploads_root: Path, first: int, count: int, mtime: float | None) -> list[str]:
    """Originals written straight into the store's folder, as a bulk copy would; returns their object keys."""
    keys = []
    for index in range(first, first + count):
        name = upload_name(index)
        path = uploads_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        keys.append(settings.UPLOADS_PREFIX + name)
    return keys


def register(instance: dg.DagsterInstance, object_keys: list[str], batch: int) -> list[float]:
    seconds = []
    for start in range(0, len(object_keys), batch):
        keys = [partition_key_for(key, settings.UPLOADS_PREFIX) for key in object_keys[start : start + batch]]
        began = time.perf_counter()
        instance.add_dynamic_partitions(UPLOADS_PARTITIONS_NAME, keys)
        seconds.append(time.perf_counter() - began)
    return seconds


def sensor_ticks(
    instance: dg.DagsterInstance, data: Path, held: int, ticks: int, budget: float
) -> tuple[list[float], bool]:
    resources = {
        "objects": LocalObjectStorage(root=str(data / "objects")),
        "database": SqliteDatabase(path=str(data / "hub.sqlite3"), migrate_schema=True),
    }
    uploads_root = data / "objects" / settings.UPLOADS_BUCKET / settings.UPLOADS_PREFIX
    cursor = UploadCursor(last_modified=time.time() + 60).to_json()
    seconds: list[float] = []
    signal.signal(signal.SIGALRM, _over_budget)
    for tick in range(ticks):
        arrival = json.loads(cursor)["last_modified"] + 1
        drop_originals(
            uploads_root, held + tick * settings.UPLOADS_PER_TICK, settings.UPLOADS_PER_TICK, arrival
        )
        began = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = media_uploads_sensor(context)
        except TickOverBudget:
            return [*seconds, time.perf_counter() - began], True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds.append(time.perf_counter() - began)
        assert (
            isinstance(result, dg.SensorResult)
            and len(result.run_requests or []) == settings.UPLOADS_PER_TICK
        )
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, dg.AddDynamicPartitionsRequest)
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        cursor = result.cursor or cursor
    return seconds, False


@contextlib.contextmanager
def webserver(home: Path, data: Path) -> Iterator[str]:
    port = free_port()
    environment = {**os.environ, "DAGSTER_HOME": str(home), "HUB_DATA_DIR": str(data), "HUB_ENV": "local"}
    command = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(
        [*command, "-m", "hub_pipelines.definitions"],
        cwd=PROJECT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "webserver.log", "wb"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dagster-webserver did not start; see {home / 'webserver.log'}"
                    ) from None
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def asset_page_query(url: str) -> tuple[float, int, int]:
    body = json.dumps(
        {"query": PARTITION_HEALTH_QUERY, "variables": {"assetKey": {"path": ["media", "uploads"]}}}
    ).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url}/graphql answered {error.code}: {error.read()[:2000]!r}") from error
    seconds = time.perf_counter() - began
    node = json.loads(payload)["data"]["assetNodeOrError"]
    return seconds, len(node["partitionKeysByDimension"][0]["partitionKeys"]), len(payload)


def instance_yaml(postgres_url: str | None) -> str:
    if postgres_url is None:
        return "telemetry:\n  enabled: false\n"
    # As deploy/dagster.prod.yaml: SQLAlchemy 2.1 maps a plain postgresql:// to psycopg 3, and the
    # webserver's storage then fails every query with "the connection is closed".
    psycopg2_url = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return f'telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: "{psycopg2_url}"\n'


def scenario(options: argparse.Namespace, uploads: int, retained: bool, postgres_url: str | None) -> dict:
    held = (
        min(uploads, int(options.uploads_per_day * settings.UPLOADS_RETENTION_DAYS)) if retained else uploads
    )
    with tempfile.TemporaryDirectory(prefix="hub-bench-partitions-") as folder:
        home, data = Path(folder) / "home", Path(folder) / "data"
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(postgres_url))
        os.environ["DAGSTER_HOME"] = str(home)
        uploads_root = data / "objects" / settings.UPLOADS_BUCKET / settings.UPLOADS_PREFIX
        with dg.DagsterInstance.get() as instance:
            began = time.perf_counter()
            if options.listed_originals:
                object_keys = drop_originals(uploads_root, 0, held, None)
            else:
                object_keys = [settings.UPLOADS_PREFIX + upload_name(index) for index in range(held)]
            registered = register(instance, object_keys, options.setup_batch)
            setup = time.perf_counter() - began
            ticks, stopped = sensor_ticks(instance, data, held, options.ticks, options.tick_budget)
            listing = []
            for _ in range(3):
                began = time.perf_counter()
                partitions = len(instance.get_dynamic_partitions(UPLOADS_PARTITIONS_NAME))
                listing.append(time.perf_counter() - began)
        queries: list[float] = []
        keys = size = 0
        if options.queries:
            with webserver(home, data) as url:
                for _ in range(options.queries):
                    seconds, keys, size = asset_page_query(url)
                    queries.append(seconds)
    return {
        "uploads": uploads,
        "retention": retained,
        "partitions": partitions,
        "setup_s": setup,
        "register_batch_p95_ms": percentile(registered, 0.95) * 1000,
        "tick_p50_s": percentile(ticks, 0.5),
        "tick_p95_s": percentile(ticks, 0.95),
        "ticks": len(ticks),
        "tick_stopped": stopped,
        "listing_s": statistics.median(listing),
        "query_p50_s": percentile(queries, 0.5) if queries else None,
        "query_max_s": max(queries) if queries else None,
        "query_keys": keys,
        "query_mb": size / 1e6,
    }


def print_row(backend: str, row: dict) -> None:
    tick = f"{row['tick_p50_s']:.2f}/{row['tick_p95_s']:.2f}" + (" (stopped)" if row["tick_stopped"] else "")
    query = f"{row['query_p50_s']:.2f}/{row['query_max_s']:.2f}" if row["query_p50_s"] is not None else "-"
    print(
        f"{backend:>8} {row['uploads']:>9,} {'yes' if row['retention'] else 'no':>9} {row['partitions']:>10,} "
        f"{row['setup_s']:>8.0f} {row['register_batch_p95_ms']:>9.1f} {tick:>20} {row['listing_s']:>9.3f} "
        f"{query:>13} {row['query_mb']:>7.1f}",
        flush=True,
    )


@contextlib.contextmanager
def postgres(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    from orders_pgbench import fresh_database, throwaway_postgres

    with throwaway_postgres() as admin_url:
        yield fresh_database(admin_url, "dagster_bench")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--uploads-per-day", type=float, default=10_000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument(
        "--setup-batch",
        type=int,
        default=settings.UPLOADS_PER_TICK,
        help="keys per add_dynamic_partitions call while setting up (the sensor's: HUB_UPLOADS_PER_TICK)",
    )
    parser.add_argument("--tick-budget", type=float, default=120.0)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="dagster-postgres instead of SQLite storage")
    parser.add_argument(
        "--listed-originals", action="store_true", help="all originals under the uploads prefix"
    )
    parser.add_argument(
        "--only", choices=["with", "without"], help="only the scenarios with or without retention"
    )
    options = parser.parse_args()
    backend = "postgres" if options.postgres else "sqlite"
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load {' '.join(f'{value:.1f}' for value in os.getloadavg())}; retention "
        f"{settings.UPLOADS_RETENTION_DAYS:g} days at {options.uploads_per_day:,.0f} uploads/day; "
        f"{settings.UPLOADS_PER_TICK} uploads per tick, set up {options.setup_batch} per call; originals "
        f"{'all under the uploads prefix' if options.listed_originals else 'of settled uploads set aside'}",
        flush=True,
    )
    print(
        f"{'storage':>8} {'uploads':>9} {'retention':>9} {'partitions':>10} {'setup s':>8} {'reg p95ms':>9} "
        f"{'tick p50/p95 s':>20} {'listing s':>9} {'query p50/max':>13} {'resp MB':>7}",
        flush=True,
    )
    with postgres(options.postgres) as postgres_url:
        for uploads in [int(size) for size in options.sizes.split(",")]:
            for retained in (False, True):
                if options.only and retained != (options.only == "with"):
                    continue
                if postgres_url is not None:
                    from orders_pgbench import fresh_database

                    postgres_url = fresh_database(
                        postgres_url.rsplit("/", 1)[0] + "/postgres", "dagster_bench"
                    )
                print_row(backend, scenario(options, uploads, retained, postgres_url))


if __name__ == "__main__":
    main()
