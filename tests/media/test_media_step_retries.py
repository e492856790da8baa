"""A media step that loses a service mid-step is run again; a refused upload is not.

A chaos run found an upload left `landed` for good: the scan refused it (over a limit), recording the
refusal met PostgreSQL restarting, and the step failed with no retry while the uploads sensor asks for
each upload once.
"""

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines.assets.media.steps import reported_as_failures
from hub_pipelines.definitions import defs
from hub_pipelines.media.step_failures import StepBlocked, StepRefused


def media_steps() -> list[dg.AssetsDefinition]:
    graph = defs.resolve_asset_graph()
    return [
        graph.get(key).assets_def
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name == "media"
    ]


def test_every_media_step_is_run_again_after_a_transient_failure():
    steps = media_steps()
    assert {step.key.to_user_string() for step in steps} >= {
        "media/uploads",
        "media/scan_verdict",
        "media/renditions",
        "media/published",
        "media/media_record",
    }
    for step in steps:
        policy = step.op.retry_policy
        assert policy is not None and policy.max_retries >= 3, step.key


def test_a_refused_upload_fails_for_good_and_a_lost_database_or_blocked_step_may_be_retried():
    context = dg.build_asset_context()
    with pytest.raises(dg.Failure) as refused, reported_as_failures(context):
        raise StepRefused("rejected upload 'a.png': image over a limit", {"object_key": "a.png"})
    assert refused.value.allow_retries is False

    with pytest.raises(dg.Failure) as blocked, reported_as_failures(context):
        raise StepBlocked("could not scan upload 'a.png': scanner unavailable")
    assert blocked.value.allow_retries is True

    lost = sa.exc.OperationalError("UPDATE media_uploads", {}, Exception("server closed the connection"))
    with pytest.raises(sa.exc.OperationalError), reported_as_failures(context):
        raise lost
