import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.core.ports import Topics
from hub_pipelines.landing.batches import RequestLanding, RunOutcome, TopicCursor, next_landing_step
from hub_pipelines.landing.offsets import describe_ranges

_FINISHED_BADLY = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def outcome_of_run(context: dg.SensorEvaluationContext, run_key: str | None) -> RunOutcome | None:
    """How the newest run with this run key ended (a Dagster retry of it counts as the same run)."""
    if run_key is None:
        return None
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/run_key": run_key, "dagster/sensor_name": context.sensor_name}),
        limit=1,
    )
    if not runs:
        return RunOutcome.MISSING
    status = runs[0].status
    if status == dg.DagsterRunStatus.SUCCESS:
        return RunOutcome.SUCCEEDED
    if status in _FINISHED_BADLY:
        return RunOutcome.FAILED
    return RunOutcome.IN_FLIGHT


def build_topic_sensor(
    name: str,
    topic: str,
    job: UnresolvedAssetJobDefinition,
    landing_asset_key: list[str],
    max_messages: int,
    interval_seconds: int,
) -> dg.SensorDefinition:
    """A sensor that reads only end offsets and asks for one landing run per batch of offset ranges."""
    op_name = "__".join(landing_asset_key)

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts a landing run for the next offset ranges of the '{topic}' topic once the previous one succeeded.",
    )
    @traced_sensor
    def topic_sensor(
        context: dg.SensorEvaluationContext, topics: dg.ResourceParam[Topics]
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = TopicCursor.from_json(context.cursor)
        step = next_landing_step(
            topic,
            cursor,
            topics.end_offsets(topic),
            outcome_of_run(context, cursor.pending_run_key),
            max_messages,
        )
        if not isinstance(step, RequestLanding):
            context.update_cursor(step.cursor.to_json())
            return dg.SkipReason(step.reason)
        offsets = describe_ranges(step.ranges)
        context.log.info(f"{topic}: requesting {offsets} ({step.note})")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=step.run_key,
                    run_config=dg.RunConfig(ops={op_name: TopicRangeConfig(ranges=offsets)}),
                    tags={"hub/topic": topic, "hub/offsets": offsets[:200]},
                )
            ],
            cursor=step.cursor.to_json(),
        )

    return topic_sensor
