import dagster as dg

uploads_partitions = dg.DynamicPartitionsDefinition(name="media_uploads")
