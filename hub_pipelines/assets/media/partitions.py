import dagster as dg

from hub_pipelines import settings
from hub_pipelines.landing.uploads import OriginalsLayout

UPLOADS_PARTITIONS_NAME = "media_uploads"
uploads_partitions = dg.DynamicPartitionsDefinition(name=UPLOADS_PARTITIONS_NAME)


def originals_layout() -> OriginalsLayout:
    return OriginalsLayout(settings.UPLOADS_PREFIX, settings.UPLOADS_SETTLED_PREFIX)
