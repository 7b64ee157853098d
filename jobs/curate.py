"""Ray job entrypoint for calibration-set curation.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/curate.py --config jobs/configs/curate.yaml [--num-samples 128 ...]

Extra arguments override the YAML, exactly as with `cola-ray curate --config ...`.
"""

import sys

from _entrypoint import run  # jobs/ is sys.path[0] when this file is run as a script

if __name__ == "__main__":
    sys.exit(run("curate"))
