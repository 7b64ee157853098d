#!/usr/bin/env bash
# Stop the cluster start.sh started (same env.sh settings): SIGTERM each node's `ray start`,
# worker node first, then SIGKILL whatever of that node is left after a grace period. Touches
# no other Ray processes on the machine (never `ray stop`). Safe to run when nothing runs.
set -uo pipefail
source "$(dirname "$0")/env.sh"

# Live (non-zombie) processes in group $1: exited ones may linger as zombies until reaped.
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'; }

# Ray's worker processes (tasks, actors) run in process groups of their own, as children of
# their node's raylet: list them before the raylet goes, so stragglers can be ended by pid.
raylet_children() {
  ps -eo pid=,ppid=,pgid= | awk -v g="$1" '{pid[NR] = $1; ppid[NR] = $2; pg[NR] = $3; if ($3 == g) member[$1] = 1}
    END {for (i = 1; i <= NR; i++) if (member[ppid[i]] && pg[i] != g) print pid[i]}'
}
workers=()

for name in worker head; do
  pidfile=$COLA_RAY_LOCAL_DIR/$name.pid
  [[ -f "$pidfile" ]] || continue
  pid=$(cat "$pidfile")
  workers+=($(raylet_children "$pid"))
  # SIGTERM to `ray start --block` alone: it stops its node's raylet, GCS and workers in order.
  # start.sh ran it under setsid, so its pid is also the process group id of everything the
  # node started; whatever is still alive after the grace period is killed by group.
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 "${COLA_RAY_STOP_TIMEOUT:-20}"); do
    group_alive "$pid" || break
    sleep 1
  done
  kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$pidfile"
done

# Without their raylet, workers exit on their own within a few seconds; end the rest. The
# `ray::` title check guards against a pid reused by an unrelated process meanwhile.
for _ in 1 2 3 4 5; do
  alive=()
  for w in "${workers[@]}"; do
    [[ "$(ps -o args= -p "$w" 2>/dev/null)" == ray::* ]] && alive+=("$w")
  done
  (( ${#alive[@]} )) || break
  sleep 1
done
for w in "${alive[@]}"; do kill -KILL "$w" 2>/dev/null; done
exit 0
