"""Clustering and selection at 1M x 64, k = 128: cola-ray's FAISS path against scikit-learn.

Data: a seeded Gaussian mixture (default 256 components of unequal weight and spread in 64-d),
so k-means has real structure to find.

  faiss    exactly what a curate run does (workflows/clustering.py), minus Ray: rows sorted by
           id, the seeded per-id hash sample of at most k * 256 rows (cluster.sample_fraction /
           in_sample), cluster.train_kmeans (FAISS, 25 iterations, 3 restarts), then every row
           assigned (cluster.assign, one block at a time) and summarised per block with
           select.summarize_clusters, the blocks' summaries summarised again (the map-reduce).
           In a real run the blocks are Ray tasks; here they run one after another in-process.
  sklearn  sklearn.cluster.KMeans(n_clusters=k, n_init=10) with its defaults (k-means++,
           max_iter=300, tol=1e-4, lloyd) on all rows, or (--sklearn ROWS:N_INIT,...) on a
           seeded uniform subsample and/or with fewer inits, said in the output.

The objective of both is computed the same way afterwards: the sum over ALL rows of the squared
distance to the nearest centroid (float64 sums). Both libraries get --threads threads (OpenMP
and BLAS, set through faiss.omp_set_num_threads and threadpoolctl); wall and CPU seconds are
both reported.

    .venv/bin/python bench/bench_clustering.py --rows 1M --sklearn 200k:10,all:1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _count(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6}.get(text[-1].upper(), 1)
    return int(float(text.rstrip("kKmM")) * scale)


def mixture(rows: int, dim: int, components: int, seed: int) -> np.ndarray:
    """[rows, dim] float32: component means ~ N(0, 1), weights ~ Dirichlet(1), each component
    isotropic with its own spread in [0.3, 0.8] (so components overlap a little)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((components, dim)).astype(np.float32)
    spread = rng.uniform(0.3, 0.8, components).astype(np.float32)
    weights = rng.dirichlet(np.ones(components))
    label = rng.choice(components, size=rows, p=weights)
    x = np.empty((rows, dim), np.float32)
    step = 1 << 18
    for lo in range(0, rows, step):
        lab = label[lo: lo + step]
        x[lo: lo + step] = means[lab] + spread[lab, None] * rng.standard_normal((len(lab), dim), dtype=np.float32)
    return x


def objective(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum over all rows of the squared distance to the nearest centroid: nearest by FAISS's
    exact flat search, the distance recomputed in float64."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    total = 0.0
    step = 1 << 17
    c64 = centroids.astype(np.float64)
    for lo in range(0, len(x), step):
        part = x[lo: lo + step]
        _, label = index.search(part, 1)
        total += float(((part.astype(np.float64) - c64[label[:, 0]]) ** 2).sum())
    return total


def faiss_path(x: np.ndarray, k: int, seed: int, iters: int, restarts: int, ppc: int, block: int) -> dict:
    from cola_ray.stages import cluster, select

    n, d = x.shape
    times = {}
    import faiss  # noqa: F401 - imported before the clock starts, as in a long-running driver

    t0, c0 = time.perf_counter(), time.process_time()
    ids = [f"c{i:08d}" for i in range(n)]  # sorted by id = row order, as the run sorts them
    frac = cluster.sample_fraction(n, k, ppc)
    mask = cluster.in_sample(ids, frac, seed)
    train = x[mask] if mask.sum() >= k else x
    times["sample_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    km = cluster.train_kmeans(train, k, seed, iters, restarts)
    times["train_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    vec_type = pa.list_(pa.float32(), d)
    summaries = []
    for lo in range(0, n, block):
        part = x[lo: lo + block]
        batch = pa.table({"id": pa.array(ids[lo: lo + block]), "source": pa.array(["synthetic"] * len(part)),
                          "num_tokens": pa.array(np.full(len(part), 256, np.int32)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), d)})
        assert batch.schema.field("vector").type == vec_type
        assigned = cluster.assign(batch, km.centroids)
        summaries.append(select.summarize_clusters(assigned.drop_columns(["vector"])))
    summary = select.summarize_clusters(pa.concat_tables(summaries))
    times["assign_select_s"] = time.perf_counter() - t2
    times["total_s"] = time.perf_counter() - t0
    times["cpu_s"] = time.process_time() - c0
    return {"centroids": km.centroids, "n_train": int(km.n_train), "train_objective": km.train_objective,
            "pipeline_objective": float(np.sum(summary.column("sq_sum").to_numpy())),
            "selected": summary.num_rows, "empty_clusters": len(select.empty_clusters(summary, k)), **times}


def sklearn_path(x: np.ndarray, k: int, seed: int, rows: int, n_init: int) -> dict:
    from sklearn.cluster import KMeans

    sub = x
    if rows < len(x):
        pick = np.random.default_rng(seed + 1).choice(len(x), size=rows, replace=False)
        sub = x[np.sort(pick)]
    t0, c0 = time.perf_counter(), time.process_time()
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(sub)
    return {"centroids": km.cluster_centers_.astype(np.float32), "total_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "rows_fit": len(sub), "n_init": n_init, "n_iter_best": int(km.n_iter_),
            "fit_inertia": float(km.inertia_)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1M")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--components", type=int, default=256, help="Gaussian components of the data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=25, help="FAISS iterations (cola-ray default)")
    ap.add_argument("--restarts", type=int, default=3, help="FAISS restarts (cola-ray default)")
    ap.add_argument("--points-per-centroid", type=int, default=256, help="cola-ray default")
    ap.add_argument("--block", type=int, default=65536, help="rows per assignment block")
    ap.add_argument("--sklearn", default="all:10",
                    help="scikit-learn fits to run, ROWS:N_INIT,... (ROWS 'all' or e.g. 200k: a seeded "
                         "uniform subsample); default all:10")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="OpenMP/BLAS threads for both (default: all cores)")
    ap.add_argument("--json", default=None, help="also write the result JSON here")
    args = ap.parse_args()

    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    rows = _count(args.rows)
    t0 = time.perf_counter()
    x = mixture(rows, args.dim, args.components, args.seed)
    print(f"data: {rows} x {args.dim}, {args.components} components, {time.perf_counter() - t0:.1f}s; "
          f"load {load_average()}", flush=True)

    result = {"bench": "clustering", "rows": rows, "dim": args.dim, "k": args.k, "components": args.components,
              "seed": args.seed, "cpus": os.cpu_count(), "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    load0 = load_average()
    f = faiss_path(x, args.k, args.seed, args.iters, args.restarts, args.points_per_centroid, args.block)
    f["load"] = [load0, load_average()]
    f["objective_all_rows"] = objective(x, f.pop("centroids"))
    result["faiss"] = f
    print(json.dumps({"faiss": f}), flush=True)

    result["sklearn"] = []
    for spec in ([] if args.skip_sklearn else args.sklearn.split(",")):
        s_rows, n_init = spec.split(":")
        s_rows = rows if s_rows == "all" else min(_count(s_rows), rows)
        load0 = load_average()
        s = sklearn_path(x, args.k, args.seed, s_rows, int(n_init))
        s["load"] = [load0, load_average()]
        s["objective_all_rows"] = objective(x, s.pop("centroids"))
        s["time_ratio_sklearn_over_faiss"] = s["total_s"] / f["total_s"]
        s["cpu_ratio_sklearn_over_faiss"] = s["cpu_s"] / f["cpu_s"]
        s["objective_ratio_faiss_over_sklearn"] = f["objective_all_rows"] / s["objective_all_rows"]
        result["sklearn"].append(s)
        print(json.dumps({"sklearn": s}), flush=True)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)

    print("\n| method | rows fit | wall (s) | CPU (s) | objective, all rows | load avg |")
    print("|---|---|---|---|---|---|")
    print(f"| cola-ray FAISS ({args.iters} it x {args.restarts} restarts on the sample; assign + summarize all "
          f"{rows}) | {f['n_train']} | {f['total_s']:.1f} (train {f['train_s']:.1f}, assign+select "
          f"{f['assign_select_s']:.1f}) | {f['cpu_s']:.1f} | {f['objective_all_rows']:.6g} | {f['load'][0]}-{f['load'][1]} |")
    for s in result["sklearn"]:
        print(f"| scikit-learn KMeans(n_init={s['n_init']}) | {s['rows_fit']} | {s['total_s']:.1f} | {s['cpu_s']:.1f} "
              f"| {s['objective_all_rows']:.6g} | {s['load'][0]}-{s['load'][1]} |")
    for s in result["sklearn"]:
        print(f"sklearn {s['rows_fit']} rows n_init={s['n_init']}: time ratio sklearn/faiss = "
              f"{s['time_ratio_sklearn_over_faiss']:.1f}x wall, {s['cpu_ratio_sklearn_over_faiss']:.1f}x CPU; "
              f"objective ratio faiss/sklearn = {s['objective_ratio_faiss_over_sklearn']:.4f}")


if __name__ == "__main__":
    main()
