#!/usr/bin/env bash
# Runs the selector experiment (bench/experiment_selectors.yaml) in two growing steps, so the
# first results exist early (the perplexity selector's scoring pass is left for the second);
# each step reruns the same sweep with more of the grid and reuses every finished trial. The last
# step is exactly:
#   cola-ray sweep --config bench/experiment_selectors.yaml --out runs/exp-selectors
# RUN_FROM=DIR runs from another folder (e.g. a frozen copy of the code on PYTHONPATH, so edits
# to the checkout during the hour-long run cannot change it halfway).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/exp-selectors}
CLI=${CLI:-$ROOT/.venv/bin/cola-ray}
CONFIG=$ROOT/bench/experiment_selectors.yaml
cd "${RUN_FROM:-$ROOT}"
export RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false COLA_RAY_NO_PROGRESS=1
t0=$(date +%s)
step() { echo "=== step $1 at +$(( $(date +%s) - t0 ))s: ${*:2}"; "$CLI" sweep --config "$CONFIG" --out "$OUT" "${@:2}"; }
step 1 --selectors cola,random,random-stratified,lexical
step 2
echo "=== done at +$(( $(date +%s) - t0 ))s"
