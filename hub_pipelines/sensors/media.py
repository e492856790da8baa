import sys
from datetime import UTC, datetime

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME, uploads_partitions
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.core.ports import ObjectInfo, ObjectStorage, ObjectStore, SqlDatabase
from hub_pipelines.jobs import MEDIA_PIPELINE
from hub_pipelines.landing.upload_records import UploadRecord, record_rejected_object, rejected_upload
from hub_pipelines.landing.uploads import (
    RefusedUpload,
    UploadCursor,
    key_refusal,
    partition_key_for,
    plan_upload_batch,
    refuse_invalid_keys,
    run_key_for,
)
from hub_pipelines.media.printable import printable

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
    """Every object under the prefix: the uploads still waiting for a run to settle them (that run
    sets the original aside under the settled prefix, out of this listing).

    One call, so a store pages in its own way (S3 by continuation token) rather than being asked to
    find its place again for each page of 1000.
    """
    return store.list_after(prefix, None, sys.maxsize)


def _record_refused(database: SqlDatabase, refused: RefusedUpload) -> None:
    info = refused.info
    record_rejected_object(
        database,
        UploadRecord(
            partition_key=refused.partition_key,
            object_key=printable(info.key),
            size=info.size,
            etag=info.etag,
            sha256=None,
            content_type_claimed=None,
            seen_at=datetime.now(UTC),
        ),
        refused.reason,
    )


@dg.sensor(
    name="media_uploads_sensor",
    job_name=MEDIA_PIPELINE,
    minimum_interval_seconds=settings.SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers one partition per new upload and runs the media pipeline for it; an object "
    "whose key the stores refuse is recorded as rejected in media_uploads instead.",
)
@traced_sensor
def media_uploads_sensor(
    context: dg.SensorEvaluationContext,
    objects: dg.ResourceParam[ObjectStorage],
    database: dg.ResourceParam[SqlDatabase],
) -> dg.SensorResult | dg.SkipReason:
    prefix, bucket = settings.UPLOADS_PREFIX, settings.UPLOADS_BUCKET
    listed = list_uploads(objects.bucket(bucket), prefix)
    instance = context.instance

    def already_taken(behind: list[ObjectInfo]) -> set[str]:
        # One query for all of them, whatever the number of partitions the instance holds.
        object_keys = {partition_key_for(info.key, prefix): info.key for info in behind}
        refused = {key for key, object_key in object_keys.items() if key_refusal(bucket, object_key, prefix)}
        registered = instance.get_existing_dynamic_partitions(
            UPLOADS_PARTITIONS_NAME, [key for key in object_keys if key not in refused]
        )
        recorded = {key for key in refused if rejected_upload(database, key)}
        return {object_keys[key] for key in {*registered, *recorded}}

    batch = plan_upload_batch(
        listed,
        UploadCursor.from_json(context.cursor),
        settings.UPLOADS_PER_TICK,
        settings.UPLOADS_LOOKBACK_SECONDS,
        already_taken,
    )
    arrivals, refused = refuse_invalid_keys(batch.new_objects + batch.late_objects, bucket, prefix)
    for rejection in refused:
        context.log.warning(f"rejected upload: {rejection.reason}")
        _record_refused(database, rejection)
    if not arrivals and not refused:
        return dg.SkipReason(
            f"no new uploads under '{prefix}' ({len(listed)} objects listed); "
            f"media backlog: {unfinished_media_runs(instance)} runs queued or running"
        )
    partition_keys = [partition_key_for(info.key, prefix) for info in arrivals]
    context.log.info(
        f"{len(batch.new_objects)} new and {len(batch.late_objects)} late uploads, {len(refused)} of them "
        f"rejected for their keys; {batch.pending_after_batch} left for the next ticks; "
        f"media backlog: {unfinished_media_runs(instance)} runs queued or running"
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=partition_key,
                run_key=run_key_for(partition_key, info.etag),
                tags={"hub/object_key": printable(info.key), "hub/etag": info.etag.strip('"')},
            )
            for partition_key, info in zip(partition_keys, arrivals, strict=True)
        ],
        dynamic_partitions_requests=[uploads_partitions.build_add_request(sorted(set(partition_keys)))]
        if partition_keys
        else [],
        cursor=batch.cursor.to_json(),
        skip_reason=None if arrivals else f"{len(refused)} uploads rejected for their keys, none to run",
    )
