import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME, uploads_partitions
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.core.ports import ObjectInfo, ObjectStorage, ObjectStore
from hub_pipelines.jobs import MEDIA_PIPELINE
from hub_pipelines.landing.uploads import UploadCursor, partition_key_for, plan_upload_batch, run_key_for

LIST_PAGE = 1000
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def unfinished_media_runs(instance: dg.DagsterInstance) -> int:
    """Media runs queued or in flight: the backlog the UI shows here and the demo feeder keeps bounded."""
    return instance.get_runs_count(dg.RunsFilter(job_name=MEDIA_PIPELINE, statuses=UNFINISHED))


def list_uploads(store: ObjectStore, prefix: str) -> list[ObjectInfo]:
    listed: list[ObjectInfo] = []
    while True:
        page = store.list_after(prefix, listed[-1].key if listed else None, LIST_PAGE)
        listed.extend(page)
        if len(page) < LIST_PAGE:
            return listed


@dg.sensor(
    name="media_uploads_sensor",
    job_name=MEDIA_PIPELINE,
    minimum_interval_seconds=settings.SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers one partition per new upload and runs the media pipeline for it.",
)
@traced_sensor
def media_uploads_sensor(
    context: dg.SensorEvaluationContext, objects: dg.ResourceParam[ObjectStorage]
) -> dg.SensorResult | dg.SkipReason:
    prefix = settings.UPLOADS_PREFIX
    listed = list_uploads(objects.bucket(settings.UPLOADS_BUCKET), prefix)
    instance = context.instance

    def already_registered(info: ObjectInfo) -> bool:
        return instance.has_dynamic_partition(UPLOADS_PARTITIONS_NAME, partition_key_for(info.key, prefix))

    batch = plan_upload_batch(
        listed,
        UploadCursor.from_json(context.cursor),
        settings.UPLOADS_PER_TICK,
        settings.UPLOADS_LOOKBACK_SECONDS,
        already_registered,
    )
    arrivals = batch.new_objects + batch.late_objects
    if not arrivals:
        return dg.SkipReason(
            f"no new uploads under '{prefix}' ({len(listed)} objects listed); "
            f"media backlog: {unfinished_media_runs(instance)} runs queued or running"
        )
    partition_keys = [partition_key_for(info.key, prefix) for info in arrivals]
    context.log.info(
        f"{len(batch.new_objects)} new and {len(batch.late_objects)} late uploads; "
        f"{batch.pending_after_batch} left for the next ticks; "
        f"media backlog: {unfinished_media_runs(instance)} runs queued or running"
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=partition_key,
                run_key=run_key_for(partition_key, info.etag),
                tags={"hub/object_key": info.key, "hub/etag": info.etag.strip('"')},
            )
            for partition_key, info in zip(partition_keys, arrivals, strict=True)
        ],
        dynamic_partitions_requests=[uploads_partitions.build_add_request(sorted(set(partition_keys)))],
        cursor=batch.cursor.to_json(),
    )
