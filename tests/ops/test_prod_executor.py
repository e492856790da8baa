"""In production the media job runs each step in its own Kubernetes pod, the transcode step sized by its tag."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY

SCRIPT = """
import json
from hub_pipelines.definitions import defs
media = defs.resolve_job_def("media_pipeline")
renditions = media.graph.node_named("media__renditions").definition
print(json.dumps({
    "media": media.executor_def.name,
    "orders": defs.resolve_job_def("orders_pipeline").executor_def.name,
    "renditions_tags": dict(renditions.tags),
}))
"""


def _load(env: str) -> dict:
    loaded = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, "HUB_ENV": env},
        timeout=240,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    return json.loads(loaded.stdout.strip().splitlines()[-1])


def test_prod_media_job_runs_each_step_in_its_own_pod_and_transcodes_are_sized():
    prod = _load("prod")
    assert prod["media"] == "media_k8s_job_executor"
    assert prod["orders"] == "multiprocess"
    step_config = json.loads(prod["renditions_tags"][USER_DEFINED_K8S_CONFIG_KEY])
    assert step_config["container_config"]["resources"]["limits"]["memory"]


def test_local_media_job_runs_in_one_process():
    assert _load("local")["media"] == "in_process"
