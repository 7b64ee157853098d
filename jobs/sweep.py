"""Ray job entrypoint for a selector x recipe x seed sweep (compress, then evaluate).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/sweep.py --config jobs/configs/sweep.yaml [--out s3://...]

Extra arguments override the YAML, exactly as with `cola-ray sweep --config ...`.
"""

import sys

from _entrypoint import run  # jobs/ is sys.path[0] when this file is run as a script

if __name__ == "__main__":
    sys.exit(run("sweep"))
