"""The user-code image (Dockerfile): what it leaves out still lets the code location load.

No container runtime is available to the suite, so the image is not built here; the release
workflow builds it. These tests check the promises the Dockerfile makes that can be checked
without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from hub_pipelines.settings import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
LEFT_OUT = re.findall(r"--no-install-package (\S+)", DOCKERFILE)


def test_image_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = re.findall(r"^FROM .+ AS (\w+)$", DOCKERFILE, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, flags=re.MULTILINE)

    assert stages[-2:] == ["build", "runtime"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "uv sync --frozen" in DOCKERFILE


def test_packages_left_out_of_the_image_are_locked_packages() -> None:
    locked = {package["name"] for package in tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())["package"]}

    assert set(LEFT_OUT) == {"chdb", "chdb-core"}
    assert set(LEFT_OUT) <= locked


def test_prod_code_location_loads_without_the_packages_left_out() -> None:
    blocked = ["chdb", "chdb_core", "pyvips"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from hub_pipelines.definitions import defs\n"
        "print(len(list(defs.resolve_all_asset_keys())))\n"
    )
    environment = {**os.environ, "HUB_ENV": "prod"}
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=240,
        check=False,
    )

    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert int(loaded.stdout.strip().splitlines()[-1]) > 0
