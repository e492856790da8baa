"""What every media asset does around its domain function: find the buckets, report a stop to Dagster."""

import contextlib
from collections.abc import Iterator

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import originals_layout
from hub_pipelines.core.ports import ObjectStorage
from hub_pipelines.media.originals import Originals
from hub_pipelines.media.staging import Staging
from hub_pipelines.media.step_failures import StepBlocked, StepRefused
from hub_pipelines.resources.media.media_settings import MediaSettings


def originals(objects: ObjectStorage) -> Originals:
    return Originals(objects.bucket(settings.UPLOADS_BUCKET), settings.UPLOADS_BUCKET, originals_layout())


def staging(objects: ObjectStorage, media_settings: MediaSettings) -> Staging:
    return Staging(objects.bucket(media_settings.staging_bucket), media_settings.staging_prefix)


@contextlib.contextmanager
def reported_as_failures(context: dg.AssetExecutionContext) -> Iterator[None]:
    """A refused step fails its partition for good (no retry), a blocked one may be retried."""
    try:
        yield
    except StepRefused as error:
        context.log.error(str(error))
        raise dg.Failure(str(error), metadata=dict(error.metadata), allow_retries=False) from error
    except StepBlocked as error:
        raise dg.Failure(str(error)) from error
