#!/usr/bin/env bash
# `make run`: Dagster (UI on 127.0.0.1:3000, daemon, sensors on) with the embedded defaults, and the
# demo feeder trickling uploads and events into it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

export HUB_ENV=local
export HUB_DATA_DIR="${HUB_DATA_DIR:-$PWD/.hub}"
export DAGSTER_HOME="$HUB_DATA_DIR/dagster_home"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

host="${HUB_UI_HOST:-127.0.0.1}"
port="${HUB_UI_PORT:-3000}"

# Each child gets its own process group (setsid), so stopping it stops everything it started:
# a backgrounded `dagster dev` ignores SIGINT, and its webserver and daemon are its children.
setsid uv run dagster dev -m hub_pipelines.definitions -h "$host" -p "$port" &
dagster_pid=$!
setsid uv run hub-pipelines demo --trickle --interval "${HUB_DEMO_INTERVAL:-10}" &
feeder_pid=$!

stop() {
  trap - INT TERM EXIT
  echo "stopping Dagster and the demo feeder"
  kill -TERM -- "-$feeder_pid" "-$dagster_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 -- "-$dagster_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$feeder_pid" "-$dagster_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "Dagster UI: http://$host:$port  (Ctrl-C stops Dagster and the demo feeder)"
wait "$dagster_pid"
