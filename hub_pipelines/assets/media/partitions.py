import dagster as dg

UPLOADS_PARTITIONS_NAME = "media_uploads"
uploads_partitions = dg.DynamicPartitionsDefinition(name=UPLOADS_PARTITIONS_NAME)
