"""How scale-out k-means grows with N: wall time, time per Lloyd pass, and the driver's memory.

Synthetic 64-d Gaussian-mixture rows are generated in chunks inside the actors, so the driver
never holds them; the figure to watch is the driver's peak RSS staying flat as N grows.

    .venv/bin/python bench/bench_kmeans_scale.py --sizes 1M,3M,10M --k 1024 --max-iter 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from dataclasses import asdict, dataclass

import psutil
import ray

from cola_ray.stages.kmeans_distributed import VectorShards, distributed_kmeans
from synthetic import SyntheticBlobs  # bench/synthetic.py: this script's folder is on sys.path


@dataclass
class Row:
    rows: int
    load_s: float
    init_s: float
    iterations: int
    lloyd_s: float
    s_per_iteration: float
    wall_s: float
    objective: float
    converged: bool
    driver_peak_rss_mib: float
    driver_rss_before_mib: float
    actor_cpu_s_per_iteration: float  # summed over actors; barely moved by other load
    actor_rss_mib: float  # largest actor, after the run
    load_average: float  # 1-minute load average of the machine when this N finished


class PeakRss:
    """Samples this process's RSS every 50 ms: ru_maxrss only ever grows over the whole process,
    so it cannot give a peak per N."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _actor_usage(shards: VectorShards) -> list[tuple[float, float]]:
    """(CPU seconds, RSS bytes) of each actor process, read inside it."""
    def usage(_actor: object) -> tuple[float, float]:
        proc = psutil.Process()
        times = proc.cpu_times()
        return times.user + times.system, proc.memory_info().rss
    return ray.get([w.__ray_call__.remote(usage) for w in shards.workers])


def _count(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6}.get(text[-1].upper(), 1)
    return int(float(text.rstrip("kKmM")) * scale)


def run_one(rows: int, args: argparse.Namespace) -> Row:
    spec = SyntheticBlobs(num_rows=rows, dim=args.dim, num_blobs=args.blobs, seed=args.seed)
    with PeakRss() as rss:
        start = time.perf_counter()
        with VectorShards.open(spec, num_workers=args.workers,
                               cpus_per_worker=args.cpus_per_worker) as shards:
            loaded = time.perf_counter()
            before = _actor_usage(shards)
            result = distributed_kmeans(shards, args.k, seed=args.seed, max_iter=args.max_iter,
                                        tol=args.tol,
                                        sample_per_centroid=args.sample_per_centroid)
            after = _actor_usage(shards)
        wall = time.perf_counter() - start
    lloyd = sum(result.iteration_seconds)
    # Actor CPU after loading covers the id sample (milliseconds) and the Lloyd passes.
    actor_cpu = sum(a[0] - b[0] for a, b in zip(after, before))
    mib = 2.0**20
    return Row(rows, loaded - start, result.init_seconds, result.iterations, lloyd,
               lloyd / result.iterations, wall, result.objective, result.converged,
               rss.peak / mib, rss.before / mib, actor_cpu / result.iterations,
               max(a[1] for a in after) / mib, os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,3M,10M", help="comma-separated row counts (K, M)")
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--blobs", type=int, default=2048, help="mixture components")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--max-iter", type=int, default=5,
                        help="5: 1M+3M+10M at k=1024 in ~9 min on 2 idle cores (estimated from "
                             "CPU time; 49 min measured on 2 heavily shared cores)")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--sample-per-centroid", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.workers * max(1, int(args.cpus_per_worker)), include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    print("| N | load s | init s | iterations | Lloyd s | s / iteration | actor CPU s / iteration "
          "| wall s | driver RSS before / peak MiB | largest actor RSS MiB | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for rows in map(_count, args.sizes.split(",")):
        row = run_one(rows, args)
        results.append(row)
        print(f"| {rows:,} | {row.load_s:.1f} | {row.init_s:.1f} | {row.iterations} | "
              f"{row.lloyd_s:.1f} | {row.s_per_iteration:.2f} | "
              f"{row.actor_cpu_s_per_iteration:.2f} | {row.wall_s:.1f} | "
              f"{row.driver_rss_before_mib:.0f} / {row.driver_peak_rss_mib:.0f} | "
              f"{row.actor_rss_mib:.0f} | {row.load_average:.1f} |", flush=True)
    print(f"driver ru_maxrss over the whole run: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    ray.shutdown()


if __name__ == "__main__":
    main()
