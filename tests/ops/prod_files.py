"""The production instance file and what the tests need to load parts of it outside a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hub_pipelines.settings import PROJECT_ROOT

PROD_INSTANCE = PROJECT_ROOT / "deploy" / "dagster.prod.yaml"

# A kubeconfig naming an API server nobody listens on: enough for dagster-k8s to build its clients,
# which connect only when a Job is created.
_UNREACHABLE_CLUSTER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "runner", "user": {"token": "not-a-real-token"}}],
    "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "runner"}}],
    "current-context": "offline",
}


def prod_config() -> dict[str, Any]:
    loaded = yaml.safe_load(PROD_INSTANCE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def offline_run_launcher(folder: Path) -> dict[str, Any]:
    """The file's run_launcher section, reading a kubeconfig in `folder` instead of the in-cluster one."""
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(_UNREACHABLE_CLUSTER))
    section = prod_config()["run_launcher"]
    section["config"].update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return section
