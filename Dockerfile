# syntax=docker/dockerfile:1.7
# The user-code image: the hub_pipelines code location served over gRPC, and the same image runs every
# run and step pod the K8sRunLauncher and k8s_job_executor start. Build: docker build -t hub-pipelines .
#
# Nothing system-level is installed at run time: PyAV, Pillow, pikepdf and psycopg ship their native
# libraries (FFmpeg, libjpeg/libwebp/libavif, qpdf, libpq) inside their wheels, virus scanning talks to
# a separate clamd service over TCP, and chdb (the local-only embedded warehouse) is left out.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-install-project --no-dev \
      --no-install-package chdb --no-install-package chdb-core
COPY README.md ./
COPY hub_pipelines ./hub_pipelines
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
      --no-install-package chdb --no-install-package chdb-core

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 hub \
 && useradd --system --uid 10001 --gid hub --home-dir /opt/dagster --shell /usr/sbin/nologin hub \
 && mkdir -p /opt/dagster/dagster_home /tmp/dagster-compute-logs \
 && chown -R hub:hub /opt/dagster /tmp/dagster-compute-logs
# Same path as in the build stage: the venv's console scripts carry absolute shebangs.
COPY --from=build --chown=hub:hub /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HUB_ENV=prod \
    HUB_LOG_FORMAT=json
WORKDIR /opt/dagster
USER 10001:10001
EXPOSE 3030
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "hub_pipelines.definitions"]
