"""A following orders run, executed by Dagster on the local environment: its landing step places each
micro-batch's orders through the lane's ledger as soon as the micro-batch landed (each placement a
materialization of the ledger), so orders arriving while it follows are PAID before its window ends."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.assets.orders.order_events import ORDER_EVENTS_KEY
from hub_pipelines.orders.tables import PAID, orders
from tests.ops.conftest import ORDERS_JOB, ORDERS_SENSOR, feeder, orders_environment
from tests.platform.conftest import ArrivalsWhileFollowing, LocalEnvironment

__all__ = ["orders_environment"]


def test_following_landing_step_pays_the_orders_of_each_micro_batch_before_its_window_ends(
    orders_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = feeder(orders_environment).send_orders(4)
    later = orders_environment.demo_feeder(seed=12)
    topics = ArrivalsWhileFollowing(
        orders_environment.resources["topics"], settings.ORDERS_TOPIC, lambda: later.send_orders(3)
    )
    monkeypatch.setattr(settings, "ORDERS_FOLLOW_SECONDS", 2.0)
    env = orders_environment.with_topics(topics)

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
