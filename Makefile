# The two commands: `make run` serves Dagster with embedded defaults and demo inputs;
# `make test` installs what is missing and runs the checks and the whole suite against real services.
SHELL := /bin/bash
# uv by absolute path: scripts/bootstrap.sh installs it in ~/.local/bin, which a new user's PATH lacks.
# Expanded when used, so after the bootstrap target has run; a uv already on PATH (CI) is used otherwise.
UV ?= $(firstword $(wildcard $(HOME)/.local/bin/uv) $(shell command -v uv) $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=
# The suite mostly waits (on services, subprocesses and the chaos cut's deployment), so `make test` runs
# it on xdist workers, each with services of its own on free ports, its own chdb folder and temporary
# Dagster instances; work stealing keeps every worker busy however long each test takes, so the chaos
# cut runs beside the rest. PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 2

.PHONY: run test check install bootstrap-run bootstrap-test format bench chaos clean

run: bootstrap-run install
	@scripts/run_local.sh

test: bootstrap-test install check
	$(UV) run pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

check: install
	$(UV) run ruff check hub_pipelines chaos tests bench
	$(UV) run ruff format --check hub_pipelines chaos tests bench
	$(UV) run mypy

format: install
	$(UV) run ruff check --fix hub_pipelines chaos tests bench
	$(UV) run ruff format hub_pipelines chaos tests bench

# Bytecode compiled once here, not by every process: each Dagster run starts a fresh interpreter that
# imports dagster and the code location, and where Python may not write .pyc files
# (PYTHONDONTWRITEBYTECODE, a read-only venv) it compiled them all again on each run, 2-3x the launch
# (docs/benchmarks.md, "Run start: launching"). compileall skips the modules whose source is unchanged.
install:
	@$(UV) sync --frozen --extra dev --quiet --compile-bytecode
	@$(UV) run --frozen --no-sync python -m compileall -q hub_pipelines

bootstrap-run:
	@scripts/bootstrap.sh run

bootstrap-test:
	@scripts/bootstrap.sh test

bench: install
	$(UV) run python bench/landing.py
	$(UV) run python bench/media_images.py
	$(UV) run python bench/media_video.py
	$(UV) run python bench/nab.py

# The whole production wiring on this machine under a workload and a nemesis, checked after
# (docs/operations.md, "Chaos run"). CHAOS_MINUTES (default 10) and CHAOS_SEED choose the run.
chaos: bootstrap-test install
	$(UV) run python -m chaos

clean:
	rm -rf .hub .pytest_cache .mypy_cache .ruff_cache
