"""An events landing run in its own process, as the daemon launches it: the `analytics_pipeline` job (the
landing step and the steps after it) on the local resources, with a Dagster instance on disk
(DAGSTER_HOME) that the test and the other workers share, so a follower and its successor find each
other the way deployed runs do (their run records and tags).

`--takes-over-from RUN` makes it a successor (its ranges empty: it plans from the book);
`--die-after-events-insert N` SIGKILLs it right after its Nth insert into `raw_events` returned (the
rows stored, neither counted nor booked). `--report` prints, after the run, what the warehouse holds.
The poll and handoff waits come from the environment (HUB_FOLLOW_POLL_SECONDS, HUB_HANDOFF_WAIT_SECONDS).
"""

from __future__ import annotations

import argparse
import json
import os

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.definitions import build_definitions, local_resources
from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import RedisCache
from tests.platform.landing_worker import DyingWarehouse

LANE = "events/0"


def stored(warehouse: ChdbWarehouse) -> dict[str, int]:
    """Rows in raw_events, distinct event ids, and the most rows any one event id has."""
    frame = warehouse.query_df(
        "SELECT count() AS rows, uniqExact(event_id) AS ids, "
        f"(SELECT max(c) FROM (SELECT count() AS c FROM {configured_tables().raw_events} FINAL "
        "GROUP BY event_id)) AS most "
        f"FROM {configured_tables().raw_events} FINAL"
    )
    return {name: int(frame[name][0]) for name in ("rows", "ids", "most")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--chdb-path", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--redis-prefix", required=True)
    parser.add_argument("--ranges", default="")
    parser.add_argument("--follow-seconds", type=float, default=0.0)
    parser.add_argument("--takes-over-from", default="")
    parser.add_argument("--die-after-events-insert", type=int, default=0)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    warehouse = ChdbWarehouse(path=args.chdb_path, lock_wait_seconds=settings.WAREHOUSE_LOCK_WAIT_SECONDS)
    resources = {
        **local_resources(),
        "warehouse": DyingWarehouse(warehouse, args.die_after_events_insert, 0)
        if args.die_after_events_insert
        else warehouse,
        "cache": RedisCache(url=args.redis_url, key_prefix=args.redis_prefix),
    }
    job = build_definitions(resources, local=True).resolve_job_def("analytics_pipeline")
    config = TopicRangeConfig(
        ranges=args.ranges,
        follow_seconds=args.follow_seconds,
        follow_longest_seconds=args.follow_seconds,
        takes_over_from=args.takes_over_from,
    )
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config=dg.RunConfig(ops={"analytics__raw_events": config}),
            instance=instance,
            run_id=args.run_id,
            tags={FOLLOWING_LANE_TAG: LANE},
            raise_on_error=False,
        )
    report: dict[str, object] = {"success": result.success}
    if args.report:
        report.update(stored(warehouse))
    print(json.dumps(report), flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    # chdb's engine threads can hang or crash the interpreter's shutdown once a session was opened and
    # closed in the process; everything the run did is durable by now, so the process leaves at once.
    os._exit(main())
