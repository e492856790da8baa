"""Run configuration shared by the landing assets of Kafka topics."""

import dagster as dg
from pydantic import Field


class TopicRangeConfig(dg.Config):
    """Which offsets to land. Sensors fill `ranges`; left empty, the run lands what is pending."""

    ranges: str = Field(
        default="",
        description="Offset ranges as 'partition:start-end,...' (end exclusive), e.g. '0:0-500,1:0-480'. "
        "Empty: everything after the last landed offset of each partition, up to max_messages.",
    )
    max_messages: int = Field(default=100_000, description="Cap on messages when `ranges` is empty.")


class LaneConfig(dg.Config):
    """Which lane of the topic a step after the landing works for. Sensors fill it; the defaults
    (lane 0 of 1) are the whole topic."""

    lane: int = Field(default=0, ge=0, description="The lane: partitions p with p % lanes == lane.")
    lanes: int = Field(default=1, ge=1, description="How many lanes the topic is split into.")
