"""Selection cost of the selectors at pool sizes up to what this machine holds (issue 11).

    python bench/bench_selectors.py --sizes 10000,100000,300000 --k 64 --out runs/bench-selectors

A synthetic pool shaped like curate's default output: 3 sources, 64-d vectors, and the layer
statistics of the default `--stat-layers 4` (8 slots of width 576: 8 x (128 + 36) floats and up
to 16 outlier channels a slot, here 0-6 a chunk drawn from a Zipf-like set of channels). Each
(size, selector) runs in its own process, so its peak RSS (the driver's: selection runs there)
is its own; time is wall-clock from opening the pool to the selection table (reading included).
Writes <out>/bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SELECTORS = ["random", "cola", "moment-match", "outlier-coverage", "cluster-herding"]
SLOTS, WIDTH, DIM, SHARD = 8, 576, 64, 20000


def layout() -> dict:
    return {"slots": [{"layer": 4 * (i // 2), "input_of": ["q_proj"] if i % 2 == 0 else ["up_proj"], "width": WIDTH}
                      for i in range(SLOTS)], "moment_buckets": 128, "sketch_rank": 8, "outlier_tau": 6.0,
            "max_outliers": 16, "sketch_seed": 0}


def write_pool(folder: Path, n: int) -> None:
    import pyarrow as pa

    from cola_ray import storage
    from cola_ray.pool import STAT_COLUMNS, shard_schema

    if (folder / "_done").exists():
        return
    schema = shard_schema(DIM, STAT_COLUMNS, layout())
    rng = np.random.default_rng(0)
    channels = rng.integers(0, WIDTH, 40)
    p = 1.0 / np.arange(1, 41)
    p /= p.sum()
    for s, lo in enumerate(range(0, n, SHARD)):
        m = min(SHARD, n - lo)
        ids = [f"c{lo + i:08d}#0" for i in range(m)]
        moments = rng.gamma(2.0, 0.5, (m, SLOTS * 128)).astype(np.float32)
        sketch = (rng.standard_normal((m, SLOTS * 36)) * 0.1 + 1.0).astype(np.float32)
        counts = rng.integers(0, 7, m)
        outliers = [(rng.integers(0, SLOTS, c) * 65536 + rng.choice(channels, c, p=p)).astype(np.int32)
                    for c in counts]
        flat = lambda a, w: pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), w).cast(pa.list_(pa.float32()))  # noqa: E731
        table = pa.table({
            "id": ids, "doc_id": [i[:-2] for i in ids], "source": [("web", "wiki", "code")[i % 3] for i in range(m)],
            "num_tokens": pa.array(rng.integers(32, 2048, m), pa.int32()), "drop": [""] * m, "text": [""] * m,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(m * DIM).astype(np.float32)), DIM),
            "dedup_key": ids, "copy": pa.array([0] * m, pa.int32()),
            "stat_moments": flat(moments, SLOTS * 128), "stat_sketch": flat(sketch, SLOTS * 36),
            "stat_outliers": pa.array(outliers, pa.list_(pa.int32())),
        }).cast(schema)
        storage.write_parquet(str(folder / f"shard-{s:04d}.parquet"), table)
    (folder / "_done").write_text("ok")


def run_one(folder: str, name: str, k: int) -> dict:
    from cola_ray.pool import Pool
    from cola_ray.selectors import SelectorContext, get_selector

    t0 = time.perf_counter()
    pool = Pool.open(folder)
    params = {"kmeans_iters": 10, "kmeans_restarts": 1} if name in ("cola", "cluster-herding") else None
    sel = get_selector(name).select(pool, k, SelectorContext(model="unused", params=params))
    seconds = time.perf_counter() - t0
    assert sel.table.num_rows == k
    return {"selector": name, "seconds": round(seconds, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,300000")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--out", default="runs/bench-selectors")
    ap.add_argument("--selectors", default=",".join(SELECTORS))
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: FOLDER SELECTOR
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.k)))
        return
    out = Path(args.out)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        folder = out / f"pool-{n}"
        t0 = time.perf_counter()
        write_pool(folder, n)
        print(f"[bench] pool of {n}: {time.perf_counter() - t0:.0f} s to write", file=sys.stderr)
        for name in args.selectors.split(","):
            env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
            proc = subprocess.run([sys.executable, __file__, "--one", str(folder), name, "--k", str(args.k)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
                rows.append({"n": n, "selector": name, "error": proc.stderr.strip().splitlines()[-1]})
                continue
            rows.append({"n": n, **json.loads(proc.stdout.strip().splitlines()[-1])})
            print(f"[bench] n={n} {name}: {rows[-1]['seconds']} s, peak RSS {rows[-1]['peak_rss_gb']} GB",
                  file=sys.stderr)
    result = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPU cores", "k": args.k, "rows": rows}
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
