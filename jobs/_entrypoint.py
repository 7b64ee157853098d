"""Shared body of the `ray job submit` entrypoints (jobs/curate.py, jobs/sweep.py).

Kept deliberately thin: all option parsing, validation and work happens in `cola_ray.cli`, so a
job on a cluster behaves exactly like `cola-ray <command> --config ...` on a laptop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `ray job submit --working-dir .` puts the uploaded checkout first on PYTHONPATH, so the job runs
# the code that was submitted, not whatever cola_ray the image happens to carry. Do the same when
# the script is run by hand (`python jobs/curate.py`), where sys.path[0] would be jobs/ instead.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(1, _REPO_ROOT)


def run(command: str, argv: list[str] | None = None) -> int:
    """Parse `--config PATH [extra CLI args...]` and hand them to `cola-ray <command>`."""
    # add_help=False: `--help` goes through to the real CLI, which lists every option;
    # allow_abbrev=False: `--co...` flags meant for the CLI are not mistaken for --config.
    parser = argparse.ArgumentParser(prog=f"jobs/{command}.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--config", help=f"YAML for `cola-ray {command}`, e.g. jobs/configs/{command}.yaml")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.config is None and not {"-h", "--help"} & set(extra):
        parser.error("--config PATH is required")
    config = ["--config", args.config] if args.config else []

    from cola_ray.cli import main  # imported late so a missing config fails fast, before torch loads

    return int(main([command, *config, *extra]) or 0)
