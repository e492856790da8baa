#!/usr/bin/env bash
# `make run`: Dagster (UI on 127.0.0.1:3000, daemon, sensors on) with the embedded defaults, a private
# Redis on a Unix socket under .hub/ for the real-time counters, and the demo feeder trickling uploads
# and events into it. Ctrl-C (or TERM) stops every process it started within 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."

export HUB_ENV=local
export HUB_DATA_DIR="${HUB_DATA_DIR:-$PWD/.hub}"
export DAGSTER_HOME="$HUB_DATA_DIR/dagster_home"
# Alert links (sensors/run_failures.py) point at the address the UI is served on.
export HUB_UI_HOST="${HUB_UI_HOST:-127.0.0.1}"
export HUB_UI_PORT="${HUB_UI_PORT:-3000}"
mkdir -p "$DAGSTER_HOME" "$HUB_DATA_DIR/redis"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
bin=.venv/bin
# Three runs may hold the warehouse pool: an events follower, the successor that takes over from it,
# and one rollup or replay (dagster.yaml, `pools`); chdb's folder lock, waited for, lets one use it at a
# time.
"$bin/dagster" instance concurrency set warehouse 3 >/dev/null

# Job control puts each background job in its own process group: Ctrl-C reaches only this script, and
# `stop` signals each group whole, run workers and code servers that Dagster started included.
set -m
groups=()

redis_socket="$HUB_DATA_DIR/redis/redis.sock"
if command -v redis-server >/dev/null; then
  redis-server --port 0 --unixsocket "$redis_socket" --unixsocketperm 700 --dir "$HUB_DATA_DIR/redis" \
    --save 60 1 --appendonly no --daemonize no --logfile "$HUB_DATA_DIR/redis/redis.log" &
  groups+=($!)
  for _ in $(seq 1 100); do [[ -S "$redis_socket" ]] && break; sleep 0.1; done
  export HUB_REDIS_URL="unix://$redis_socket"
else
  echo "WARNING: redis-server is not installed: real-time counters and cached dashboard answers will" >&2
  echo "WARNING: last only as long as each run. Install it with: sudo apt-get install -y redis-server" >&2
fi

"$bin/dagster" dev -w workspace.yaml -h "$HUB_UI_HOST" -p "$HUB_UI_PORT" &
dagster_group=$!
groups+=("$dagster_group")
"$bin/hub-pipelines" demo --trickle --interval "${HUB_DEMO_INTERVAL:-10}" &
groups+=($!)

any_alive() {
  local group
  for group in "${groups[@]}"; do kill -0 -- "-$group" 2>/dev/null && return 0; done
  return 1
}

stop() {
  trap - INT TERM EXIT
  echo "stopping Dagster, the demo feeder and Redis"
  local group
  for group in "${groups[@]}"; do kill -INT -- "-$group" 2>/dev/null || true; done
  # Dagster's own shutdown waits up to 30 s for its webserver, daemon and code servers; 5 s is enough
  # for them to finish what they are writing, and what is left after that is killed. A deadline on
  # the clock, not a count of polls: on a busy machine each poll takes longer than its sleep.
  local deadline=$((${EPOCHREALTIME/./} + 5000000))
  while ((${EPOCHREALTIME/./} < deadline)); do
    any_alive || return 0
    sleep 0.1
  done
  echo "killing what did not stop within 5 s"
  for group in "${groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

echo "Dagster UI: http://$HUB_UI_HOST:$HUB_UI_PORT  (Ctrl-C stops everything)"
# Waits in half-second steps rather than one `wait` on Dagster: bash runs a pending trap between
# commands at the latest, so Ctrl-C takes effect within half a second even when the signal does not
# interrupt the `wait` (once, under load, an interrupt left everything running for 10 s and more).
while kill -0 "$dagster_group" 2>/dev/null; do
  sleep 0.5 &
  wait $! || true
done
