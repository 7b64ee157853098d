"""What every workflow needs: a Ray connection, stage timers, logging, version capture."""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager


PACKAGES = ("cola-ray", "ray", "torch", "transformers", "datasets", "faiss-cpu", "faiss-gpu-cu12",
            "pyarrow", "numpy", "llmcompressor", "lm-eval", "compressed-tensors")


def log(msg: str) -> None:
    print(f"[cola-ray] {msg}", file=sys.stderr, flush=True)


def ensure_ray() -> None:
    """Connect to the cluster of `ray job submit` (RAY_ADDRESS), or start a local Ray."""
    import ray

    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):  # a private local Ray: no token to hand out
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if not os.environ.get("COLA_RAY_VERBOSE"):
            # Ray 2.60's C++ core worker prints "Actor ... has constructor arguments in the object
            # store and max_restarts > 0" on stderr for every Ray Data actor pool, even the minimal
            # `ray.data.range(1).map_batches(Cls)` (ray-project/ray#57733, open); no Python logger
            # holds it. Its log level is read from the environment at start: the driver's core
            # worker, and for a private local Ray also the raylet and workers it starts, keep
            # fatal messages only. A user's own RAY_BACKEND_LOG_LEVEL wins; COLA_RAY_VERBOSE=1
            # keeps Ray's defaults. Task errors still reach the CLI as exceptions either way.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    # Same inputs -> same order of rows -> same --max-docs prefix and same outputs, whatever
    # the number of workers.
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = sys.stderr.isatty() and not os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS")
    # A CPU actor can legitimately spend many minutes on one shard; Ray's default 30-minute
    # no-progress guard would abort a slow but healthy run.
    ctx.execution_no_progress_timeout_s = -1
    # A UserError raised in a stage must reach the CLI as itself (its one line): Ray Data would
    # wrap it in UserCodeException, whose pickled copy on the driver has lost the original.
    ctx.raise_original_map_exception = True
    # Ray Data logs every dataset's execution plan (INFO) and notes such as "Progress bars
    # disabled" (WARNING) on the terminal; cola-ray prints its own stage lines, progress and
    # summary. Only its console handler is quietened: the full Ray Data log still goes to the
    # session folder (/tmp/ray/session_*/logs/ray-data). COLA_RAY_VERBOSE=1 shows it all.
    # Errors too: a failed task's exception reaches the CLI anyway (a UserError as its one line,
    # anything else with its traceback), so Ray Data's logged copy would only print a traceback
    # above the one-line message.
    if not os.environ.get("COLA_RAY_VERBOSE"):
        for handler in logging.getLogger("ray.data").handlers:
            if "File" not in type(handler).__name__:
                handler.setLevel(logging.CRITICAL)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def progress(what: str, unit: str = " chunks", total: int | None = None, initial: int = 0):
    """A tqdm bar on stderr: with a total (documents counted by an earlier pass) it shows the
    rate and an ETA; without one, a counter and its rate."""
    from tqdm import tqdm

    return tqdm(desc=f"[cola-ray] {what}", unit=unit, total=total, initial=initial, file=sys.stderr,
                mininterval=2.0, disable=os.environ.get("COLA_RAY_NO_PROGRESS") == "1")


class RunClock:
    """Wall time per stage, in the order stages ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        log(f"{stage} ...")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - t0, 2)
