"""The topic sensors: one landing run per batch of offset ranges and lane (landing/lanes.py), with a
cursor resynced from every landing of the topic (the sensor's runs, the CLI, the UI, backfills), and a
page for a stuck range.

Sensors never open the warehouse or the SQL database: what has landed is read from the Dagster
instance, where each landing asset's materialization names the ranges it landed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dagster as dg

from hub_pipelines.analytics.alerting import Alert, landing_alert
from hub_pipelines.assets.landing import rewound_partition_alert
from hub_pipelines.assets.topic_config import LaneConfig, TopicRangeConfig
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.core.ports import Notifier, Topics, TopicUnavailable, UnknownTopic
from hub_pipelines.landing.batches import (
    BOOK_POSITIONS_METADATA,
    Landing,
    PendingRun,
    RunOutcome,
    StuckRange,
    parse_book_positions,
)
from hub_pipelines.landing.lanes import (
    FOLLOWING_LANE_TAG,
    LANE_TAG,
    LaneCursors,
    TopicUnreadable,
    next_lanes_step,
    relane,
    resync_lanes,
)
from hub_pipelines.landing.offsets import describe_ranges, parse_ranges
from hub_pipelines.sensors.run_failures import run_error, run_url

_FINISHED_BADLY = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
# Materializations read per tick; a longer history is read over the next ticks before planning.
LANDINGS_PER_TICK = 500
SENSOR_NAME_TAG = "dagster/sensor_name"


def pending_run(context: dg.SensorEvaluationContext, run_key: str) -> PendingRun:
    """How the newest run with this run key ended (a Dagster retry of it counts as the same run), or when
    it started if it is in flight."""
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/run_key": run_key, SENSOR_NAME_TAG: context.sensor_name}),
        limit=1,
    )
    if not records:
        return PendingRun(RunOutcome.MISSING)
    run = records[0].dagster_run
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return PendingRun(RunOutcome.SUCCEEDED, run_id=run.run_id)
    if run.status in _FINISHED_BADLY:
        return PendingRun(RunOutcome.FAILED, run_error(context.instance, run.run_id), run.run_id)
    started_at = records[0].start_time if run.status == dg.DagsterRunStatus.STARTED else None
    return PendingRun(RunOutcome.IN_FLIGHT, run_id=run.run_id, started_at=started_at)


def landings_since(
    context: dg.SensorEvaluationContext, asset_key: dg.AssetKey, after: int | None
) -> tuple[list[Landing], int | None, bool]:
    """The ranges each materialization of the landing asset reports, after storage id `after`, the
    storage id of the last one read, and whether more are left for the next tick."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=after),
        limit=LANDINGS_PER_TICK,
        ascending=True,
    ).records
    own_runs: dict[str, bool] = {}
    landings = []
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("ranges") if materialization else None
        text = value.value if isinstance(value, dg.TextMetadataValue) else ""
        try:
            ranges = tuple(parse_ranges(text)) if text and text != "none" else ()
        except ValueError:
            context.log.warning(f"run {record.run_id}: landed ranges {text!r} are unreadable; ignored")
            continue
        if record.run_id not in own_runs:
            run = context.instance.get_run_by_id(record.run_id)
            own_runs[record.run_id] = run is not None and run.tags.get(SENSOR_NAME_TAG) == context.sensor_name
        landings.append(
            Landing(
                ranges,
                by_other_writer=not own_runs[record.run_id],
                book_positions=book_positions(context, record.run_id, materialization),
            )
        )
    return landings, records[-1].storage_id if records else None, len(records) == LANDINGS_PER_TICK


def book_positions(
    context: dg.SensorEvaluationContext, run_id: str, materialization: dg.AssetMaterialization | None
) -> dict[int, int]:
    """The book's landed position per partition a landing reported with its batch (`Landing`)."""
    value = materialization.metadata.get(BOOK_POSITIONS_METADATA) if materialization else None
    if not isinstance(value, dg.TextMetadataValue) or not value.value:
        return {}
    try:
        return parse_book_positions(value.value)
    except ValueError:
        context.log.warning(f"run {run_id}: book positions {value.value!r} are unreadable; ignored")
        return {}


def latest_upstream_loss(context: dg.SensorEvaluationContext, asset_key: dg.AssetKey) -> str | None:
    """The upstream loss the newest landing of the topic booked (and paged), if it booked one."""
    event = context.instance.get_latest_materialization_event(asset_key)
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get("upstream_loss") if materialization else None
    text = value.value if isinstance(value, dg.TextMetadataValue) else None
    return text if text and text != "none" else None


def stuck_range_alert(stuck: StuckRange, run_id: str | None) -> Alert:
    where = f" {run_url(run_id)}" if run_id else ""
    return landing_alert(stuck.topic, stuck.dedup_key, f"Landing {stuck.describe()}{where}")


def unreadable_topic_alert(unreadable: TopicUnreadable) -> Alert:
    return landing_alert(
        unreadable.topic, unreadable.dedup_key, f"Landing {unreadable.describe(time.time())}"
    )


def build_topic_sensor(
    name: str,
    topic: str,
    job_name: str,
    landing_asset_key: list[str],
    max_messages: int,
    interval_seconds: int,
    follow_seconds: float = 0.0,
    follow_longest_seconds: float = 0.0,
    handoff_lead_seconds: float = 0.0,
    lanes: int = 1,
    lane_ops: Sequence[str] = (),
    max_runtime_seconds: float = 0.0,
) -> dg.SensorDefinition:
    """A sensor that reads only end offsets and asks for one landing run per batch of offset ranges
    and lane; `lane_ops` are the steps after the landing that take the run's lane (`LaneConfig`). Each
    run keeps following its lane's partitions for `follow_seconds` after its ranges (micro-batches it
    reports as materializations, which the next tick folds in like any other landing). With
    `handoff_lead_seconds`, a follower's successor is requested that long before its window ends, and
    takes over once it is up (landing/handoff.py); the lanes then carry FOLLOWING_LANE_TAG, which the
    queue admits two runs of."""
    op_name = "__".join(landing_asset_key)
    asset_key = dg.AssetKey(landing_asset_key)
    hands_over = follow_seconds > 0 and handoff_lead_seconds > 0
    hand_over_after = max(0.0, follow_seconds - handoff_lead_seconds) if hands_over else None
    lane_tag = FOLLOWING_LANE_TAG if hands_over else LANE_TAG
    # Run monitoring fails a run still going after this: one whose worker died unnoticed no longer holds
    # its lane for good (settings.LANDING_RUN_SPARE_SECONDS).
    max_runtime = {dg.MAX_RUNTIME_SECONDS_TAG: str(int(max_runtime_seconds))} if max_runtime_seconds else {}

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts a landing run for the next offset ranges of the '{topic}' topic once the "
        "previous one succeeded; pages when a range keeps failing.",
    )
    @traced_sensor
    def topic_sensor(
        context: dg.SensorEvaluationContext,
        topics: dg.ResourceParam[Topics],
        pager: dg.ResourceParam[Notifier],
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = relane(LaneCursors.from_json(context.cursor, topic), lanes)
        landings, last_seen, more = landings_since(context, asset_key, cursor.last_landing_seen)
        cursor = resync_lanes(cursor, landings, last_seen)
        if more:
            context.update_cursor(cursor.to_json())
            return dg.SkipReason(
                f"read {LANDINGS_PER_TICK} landings of {topic}, up to #{last_seen}; more next tick"
            )
        pending = {key: pending_run(context, key) for key in cursor.run_keys()}
        try:
            end_offsets = topics.end_offsets(topic)
        except (TopicUnavailable, UnknownTopic) as unreadable:
            # KeyError's str() quotes its message.
            error = str(unreadable.args[0]) if unreadable.args else repr(unreadable)
            cursor, newly_unreadable = cursor.unreadable_at(topic, error, time.time())
            if newly_unreadable is not None:
                pager.send([unreadable_topic_alert(newly_unreadable)])
                context.log.error(newly_unreadable.describe(time.time()))
            context.update_cursor(cursor.to_json())
            return dg.SkipReason(f"cannot read the end offsets of {topic}: {error}")
        tick = next_lanes_step(
            topic, cursor, end_offsets, pending, max_messages, time.time(), hand_over_after
        )
        for rewound in tick.newly_rewound:
            pager.send([rewound_partition_alert(rewound)])
            context.log.error(rewound.describe())
        for lane, wait in tick.waits:
            if wait.newly_stuck is not None:
                stuck_run = pending.get(tick.cursor.lanes[lane.index].pending_run_key or "")
                pager.send([stuck_range_alert(wait.newly_stuck, stuck_run.run_id if stuck_run else None)])
                context.log.error(wait.newly_stuck.describe())
        if not tick.requests:
            context.update_cursor(tick.cursor.to_json())
            loss = latest_upstream_loss(context, asset_key)
            reason = tick.reason()
            return dg.SkipReason(f"{reason}; last landing lost upstream: {loss}" if loss else reason)
        run_requests = []
        for lane, step in tick.requests:
            offsets = describe_ranges(step.ranges)
            context.log.info(
                f"{lane.name}: requesting {offsets or 'the next ranges by the book'} ({step.note})"
            )
            lane_config = LaneConfig(lane=lane.index, lanes=lane.count)
            run_requests.append(
                dg.RunRequest(
                    run_key=step.run_key,
                    run_config=dg.RunConfig(
                        ops={
                            op_name: TopicRangeConfig(
                                ranges=offsets,
                                follow_seconds=follow_seconds,
                                follow_longest_seconds=follow_longest_seconds,
                                lane=lane.index,
                                lanes=lane.count,
                                takes_over_from=step.takes_over_from or "",
                                held_partitions=",".join(map(str, tick.cursor.held_partitions())),
                            ),
                            **dict.fromkeys(lane_ops, lane_config),
                        }
                    ),
                    tags={
                        "hub/topic": topic,
                        lane_tag: lane.tag,
                        "hub/offsets": offsets[:200] or "from the book",
                        **max_runtime,
                    },
                )
            )
        return dg.SensorResult(run_requests=run_requests, cursor=tick.cursor.to_json())

    return topic_sensor
