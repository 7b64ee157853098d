# Settings shared by start.sh and stop.sh (sourced, not run). Every value can be overridden from
# the environment, so parallel test sessions can each run their own cluster on their own ports.
# Ports used: COLA_RAY_PORT (GCS) .. COLA_RAY_PORT+3 (dashboard, one dashboard agent per node);
# all other Ray ports are picked at random by Ray.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RAY_BIN=${RAY_BIN:-$REPO_ROOT/.venv/bin/ray}
COLA_RAY_PORT=${COLA_RAY_PORT:-6390}
COLA_RAY_DASHBOARD_PORT=${COLA_RAY_DASHBOARD_PORT:-$((COLA_RAY_PORT + 1))}
COLA_RAY_HEAD_AGENT_PORT=${COLA_RAY_HEAD_AGENT_PORT:-$((COLA_RAY_PORT + 2))}
COLA_RAY_WORKER_AGENT_PORT=${COLA_RAY_WORKER_AGENT_PORT:-$((COLA_RAY_PORT + 3))}
COLA_RAY_HEAD_CPUS=${COLA_RAY_HEAD_CPUS:-1}
COLA_RAY_WORKER_CPUS=${COLA_RAY_WORKER_CPUS:-1}
# Ray's default object store is 30% of RAM *per node*: two nodes would pin 60% of this machine.
COLA_RAY_OBJECT_STORE_BYTES=${COLA_RAY_OBJECT_STORE_BYTES:-300000000}
# The dashboard serves `ray job submit` and the state API (ray[default] is installed).
COLA_RAY_INCLUDE_DASHBOARD=${COLA_RAY_INCLUDE_DASHBOARD:-true}
# Pid files, logs and each node's Ray temp dir. Kept short: Ray puts unix sockets under it and
# socket paths are limited to 107 bytes.
COLA_RAY_LOCAL_DIR=${COLA_RAY_LOCAL_DIR:-/tmp/cola-ray-$COLA_RAY_PORT}
COLA_RAY_ADDRESS=127.0.0.1:$COLA_RAY_PORT
# Ray 2.60 turns on token auth for new clusters; local test clusters live on loopback only.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export RAY_USAGE_STATS_ENABLED=0
# On SIGTERM, Ray 2.60's `ray start --block` drains the node for up to 30 s (for Serve
# replicas); a test cluster has nothing to drain, so stop.sh returns in seconds.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}
