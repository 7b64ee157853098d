# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv first (scripts/bootstrap.sh is idempotent and takes ~2 minutes once).
PY := .venv/bin/python
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test test-all clean

venv:
	./scripts/bootstrap.sh

demo: venv
	.venv/bin/cola-ray curate

# GPU tests are marked `gpu` and skipped without CUDA; exit code 5 (no tests) fails the target.
test: venv
	$(PY) -m pytest -q -m "not gpu" --timeout=900 --durations=10

clean:
	rm -rf runs .pytest_cache
