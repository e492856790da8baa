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
python=.venv/bin/python

# A command started with `&` from a script inherits SIGINT as ignored, and `dagster dev` would then
# ignore Ctrl-C. Restore the default handler before exec, so that Ctrl-C, which the terminal sends to
# the whole foreground process group, reaches Dagster (and the processes it starts) and the feeder.
with_sigint() {
  exec "$python" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' "$@"
}

with_sigint .venv/bin/dagster dev -m hub_pipelines.definitions -h "$host" -p "$port" &
dagster_pid=$!
with_sigint .venv/bin/hub-pipelines demo --trickle --interval "${HUB_DEMO_INTERVAL:-10}" &
feeder_pid=$!

stop() {
  trap - INT TERM EXIT
  echo "stopping Dagster and the demo feeder"
  # Ctrl-C already reached them; a TERM sent to this script has not, so pass an interrupt on.
  kill -INT "$dagster_pid" "$feeder_pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$dagster_pid" 2>/dev/null || kill -0 "$feeder_pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "Dagster did not stop within 30 s; killing it"
  kill -KILL "$dagster_pid" "$feeder_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "Dagster UI: http://$host:$port  (Ctrl-C stops Dagster and the demo feeder)"
wait "$dagster_pid"
