"""An upload's original in the uploads bucket: where it is, and settling it once a run has decided."""

from __future__ import annotations

from dataclasses import dataclass

from hub_pipelines.core.ports import ObjectInfo, ObjectStore, SqlDatabase
from hub_pipelines.landing.upload_records import record_upload_outcome
from hub_pipelines.landing.upload_retention import set_settled_original_aside
from hub_pipelines.landing.uploads import OriginalsLayout
from hub_pipelines.media.printable import printable


@dataclass(frozen=True)
class Originals:
    """The uploads bucket and the layout of the originals in it."""

    store: ObjectStore
    bucket: str
    layout: OriginalsLayout

    def arrived(self, partition_key: str) -> str:
        return self.layout.arrived(partition_key)

    def locate(self, partition_key: str) -> tuple[str, ObjectInfo] | None:
        return self.layout.locate(self.store, partition_key)

    def settle(self, database: SqlDatabase, partition_key: str, status: str, reason: str | None) -> None:
        """Record the upload's final status and move its original under the settled prefix."""
        record_upload_outcome(database, partition_key, status, printable(reason) if reason else None)
        set_settled_original_aside(database, self.store, self.layout, partition_key)
