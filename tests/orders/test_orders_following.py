"""A following orders run, executed by Dagster on the local environment: its landing step places each
micro-batch's orders through the lane's ledger as soon as the micro-batch landed (each placement a
materialization of the ledger), so orders arriving while it follows are PAID before its window ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.assets.orders.order_events import ORDER_EVENTS_KEY
from hub_pipelines.definitions import build_definitions
from hub_pipelines.orders.tables import PAID, orders
from hub_pipelines.resources.topics import LocalTopicLog
from tests.ops.conftest import ORDERS_JOB, ORDERS_SENSOR, feeder, orders_environment
from tests.platform.conftest import LocalEnvironment

__all__ = ["orders_environment"]


@dataclass
class OrdersWhileFollowing:
    """The local topics, where more orders arrive the first time a follower asks for the topic's ends
    once `armed` (the sensor's tick before the run asks too, and must not see them)."""

    inner: LocalTopicLog
    arrive: Callable[[], int]
    armed: bool = False
    arrived: int = 0

    def end_offsets(self, topic: str) -> dict[int, int]:
        if self.armed and not self.arrived and topic == settings.ORDERS_TOPIC:
            self.arrived = self.arrive()
        return self.inner.end_offsets(topic)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_following_landing_step_pays_the_orders_of_each_micro_batch_before_its_window_ends(
    orders_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = feeder(orders_environment).send_orders(4)
    later = orders_environment.demo_feeder(seed=12)
    topics = OrdersWhileFollowing(orders_environment.resources["topics"], lambda: later.send_orders(3))
    monkeypatch.setattr(settings, "ORDERS_FOLLOW_SECONDS", 2.0)
    resources = {**orders_environment.resources, "topics": topics}
    env = LocalEnvironment(
        orders_environment.data_dir,
        resources,
        build_definitions(resources, local=True),
        orders_environment.instance,
    )

    result, _ = env.tick(ORDERS_SENSOR, None)
    assert isinstance(result, dg.SensorResult) and result.run_requests
    [request] = result.run_requests
    assert request.run_config["ops"]["orders__order_events"]["config"]["follow_seconds"] == 2.0
    topics.armed = True
    # The landing step alone: the ledger step after it would pay whatever the follower left.
    run = env.run(ORDERS_SENSOR, ORDERS_JOB, request, asset_selection=[dg.AssetKey(ORDER_EVENTS_KEY)])
    assert run.success

    placements = env.instance.fetch_materializations(
        dg.AssetKey(ORDER_LEDGER_KEY), limit=100, ascending=True
    ).records
    assert topics.arrived == 3 and len(placements) >= 2
    assert {record.run_id for record in placements} == {run.run_id}
    paid_per_batch = [
        record.asset_materialization.metadata["orders_paid"].value
        for record in placements
        if record.asset_materialization is not None
    ]
    assert paid_per_batch[0] == first and sum(paid_per_batch) == first + topics.arrived
    with env.resources["database"].transaction() as connection:
        statuses = connection.execute(sa.select(orders.c.status)).scalars().all()
    assert statuses == [PAID] * (first + topics.arrived)
