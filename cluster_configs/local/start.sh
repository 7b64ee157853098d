#!/usr/bin/env bash
# Start a 2-node Ray cluster on this machine: a head and a worker node, each its own raylet and
# temp dir, so tests exercise real cross-node scheduling and object transfer. Custom resources
# {"head": 1} / {"worker": 1} let a test pin a task to one node. Settings: env.sh.
# Prints the cluster address (for ray.init(address=...)) on stdout; stop with stop.sh.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PY=$(dirname "$RAY_BIN")/python
mkdir -p "$COLA_RAY_LOCAL_DIR"

if [[ -f "$COLA_RAY_LOCAL_DIR/head.pid" ]] && kill -0 "$(cat "$COLA_RAY_LOCAL_DIR/head.pid")" 2>/dev/null; then
  echo "start.sh: a cluster from $COLA_RAY_LOCAL_DIR is already running; run stop.sh first" >&2
  exit 1
fi

# One node: `ray start --block` in its own session, so stop.sh can end exactly this node's
# process group (never `ray stop`, which kills every Ray process of this user on the machine).
start_node() {  # name, then extra `ray start` args
  local name=$1; shift
  setsid "$RAY_BIN" start --block --disable-usage-stats --node-ip-address=127.0.0.1 \
    --temp-dir="$COLA_RAY_LOCAL_DIR/$name" --object-store-memory="$COLA_RAY_OBJECT_STORE_BYTES" \
    "$@" >"$COLA_RAY_LOCAL_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$COLA_RAY_LOCAL_DIR/$name.pid"
}

# Wait until the cluster has `want` live nodes; fail early if a node process died.
wait_for_nodes() {
  local want=$1 deadline=$((SECONDS + ${COLA_RAY_START_TIMEOUT:-90})) name
  while (( SECONDS < deadline )); do
    for name in head worker; do
      if [[ -f "$COLA_RAY_LOCAL_DIR/$name.pid" ]] && ! kill -0 "$(cat "$COLA_RAY_LOCAL_DIR/$name.pid")" 2>/dev/null; then
        echo "start.sh: the $name node exited; log: $COLA_RAY_LOCAL_DIR/$name.log" >&2
        tail -n 20 "$COLA_RAY_LOCAL_DIR/$name.log" >&2
        return 1
      fi
    done
    # Bounded: ray.init() can hang for minutes on a port held by something that is not Ray.
    if timeout -k 5 "${COLA_RAY_PROBE_TIMEOUT:-60}" "$PY" - "$COLA_RAY_ADDRESS" "$want" <<'PYEOF' 2>/dev/null; then return 0; fi
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
alive = sum(n["Alive"] for n in ray.nodes())
sys.exit(0 if alive >= int(sys.argv[2]) else 1)
PYEOF
    sleep 1
  done
  echo "start.sh: timed out waiting for $want node(s) at $COLA_RAY_ADDRESS" >&2
  return 1
}

start_node head --head --port="$COLA_RAY_PORT" --num-cpus="$COLA_RAY_HEAD_CPUS" --num-gpus=0 \
  --resources='{"head": 1}' --include-dashboard="$COLA_RAY_INCLUDE_DASHBOARD" \
  --dashboard-port="$COLA_RAY_DASHBOARD_PORT" --dashboard-agent-listen-port="$COLA_RAY_HEAD_AGENT_PORT"
wait_for_nodes 1 || { "$(dirname "$0")/stop.sh" >&2; exit 1; }

start_node worker --address="$COLA_RAY_ADDRESS" --num-cpus="$COLA_RAY_WORKER_CPUS" --num-gpus=0 \
  --resources='{"worker": 1}' --dashboard-agent-listen-port="$COLA_RAY_WORKER_AGENT_PORT"
wait_for_nodes 2 || { "$(dirname "$0")/stop.sh" >&2; exit 1; }

echo "$COLA_RAY_ADDRESS"
