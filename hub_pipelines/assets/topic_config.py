"""Run configuration shared by the landing assets of Kafka topics."""

import dagster as dg
from pydantic import Field


class TopicRangeConfig(dg.Config):
    """Which offsets to land. Sensors fill `ranges` (and `follow_seconds`); left empty, the run lands what
    is pending once."""

    ranges: str = Field(
        default="",
        description="Offset ranges as 'partition:start-end,...' (end exclusive), e.g. '0:0-500,1:0-480'. "
        "Empty: everything after the last landed offset of each partition, up to max_messages.",
    )
    max_messages: int = Field(
        default=100_000, description="Cap on messages when `ranges` is empty, and per followed micro-batch."
    )
    follow_seconds: float = Field(
        default=0.0,
        description="After landing `ranges`, keep landing what arrives on the topic in micro-batches for "
        "this long (each reported as a materialization). 0: land once and stop.",
    )
