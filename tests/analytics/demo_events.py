"""A local topic filled with the demo feeder's events, for the analytics tests."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo.feeder import analytics_event
from hub_pipelines.resources.topics import LocalTopicLog


def demo_event_topic(root: Path, topic: str, count: int, hour: datetime, seed: int) -> LocalTopicLog:
    """`count` demo events stamped within the hour from `hour`, on partition 0 of `topic`."""
    rng = random.Random(seed)
    topics = LocalTopicLog(root=str(root / "topics"))
    topics.create_topic(topic, 1)
    values = [
        json.dumps(analytics_event(rng, hour + timedelta(seconds=rng.randrange(3600)))).encode()
        for _ in range(count)
    ]
    topics.produce(topic, [OutgoingMessage(v, partition=0) for v in values])
    return topics
