"""Run configuration shared by the landing assets of Kafka topics."""

import dagster as dg
from pydantic import Field


class LaneConfig(dg.Config):
    """Which lane of the topic a step works for. Sensors fill it; the defaults (lane 0 of 1) are the
    whole topic."""

    lane: int = Field(default=0, ge=0, description="The lane: partitions p with p % lanes == lane.")
    lanes: int = Field(default=1, ge=1, description="How many lanes the topic is split into.")

    def holds(self, partition: int) -> bool:
        return partition % self.lanes == self.lane


class TopicRangeConfig(LaneConfig):
    """Which offsets to land. Sensors fill `ranges` (and `follow_seconds` and the lane); left empty, the
    run lands what is pending once."""

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
        description="After landing `ranges`, keep landing what arrives on the lane's partitions in "
        "micro-batches for this long (each reported as a materialization). 0: land once and stop.",
    )
    follow_longest_seconds: float = Field(
        default=0.0,
        description="While no other run waits for the follower's pool when its time is up, follow for "
        "another `follow_seconds`, up to this long in all. 0: stop after `follow_seconds`.",
    )
    takes_over_from: str = Field(
        default="",
        description="The following run this run takes over from (set by the sensor for a successor, "
        "whose `ranges` are empty): once up, it tells that run to stop and waits for it to end.",
    )
    held_partitions: str = Field(
        default="",
        description="Partitions the sensor holds since their end fell below what was landed from them "
        "(a topic deleted and made again), as '0,3': this run lands nothing of them.",
    )

    def lands(self, partition: int) -> bool:
        """Whether this run lands the partition: its lane's, and not held."""
        return self.holds(partition) and str(partition) not in self.held_partitions.split(",")
