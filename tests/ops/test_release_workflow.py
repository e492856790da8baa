"""The release workflow and the Helm values pin the Dagster version the code location runs."""

from __future__ import annotations

from importlib.metadata import version

import yaml

from hub_pipelines.settings import PROJECT_ROOT

WORKFLOW = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "release.yml").read_text())
VALUES = yaml.safe_load((PROJECT_ROOT / "deploy" / "helm" / "values.yaml").read_text())


def test_release_runs_the_gate_before_building_and_deploys_only_after() -> None:
    jobs = WORKFLOW["jobs"]
    assert jobs["image"]["needs"] == "test"
    assert jobs["deploy"]["needs"] == "image"
    assert set(jobs["smoke"]["needs"]) == {"image", "deploy"}
    commands = "\n".join(step.get("run", "") for step in jobs["test"]["steps"])
    assert "make test" in commands


def test_release_installs_system_packages_with_the_bootstrap_make_test_runs() -> None:
    commands = [step.get("run", "") for step in WORKFLOW["jobs"]["test"]["steps"]]
    assert "scripts/bootstrap.sh test" in commands
    assert not any("apt-get" in command for command in commands)


def test_chart_and_dagster_images_match_the_installed_dagster() -> None:
    installed = version("dagster")
    assert WORKFLOW["env"]["DAGSTER_VERSION"] == installed
    assert str(VALUES["dagsterWebserver"]["image"]["tag"]) == installed
    assert str(VALUES["dagsterDaemon"]["image"]["tag"]) == installed


def test_deploy_uses_our_values_file_and_the_sha_tagged_image() -> None:
    deploy = "\n".join(step.get("run", "") for step in WORKFLOW["jobs"]["deploy"]["steps"])
    assert "-f deploy/helm/values.yaml" in deploy
    assert "deployments[0].image.tag=${{ needs.image.outputs.tag }}" in deploy
