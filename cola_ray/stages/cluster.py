"""Stage 4: k-means over the projected vectors with FAISS, and nearest-centroid assignment.

Training runs on one node (k-means++ starts, then FAISS's multi-threaded Lloyd iterations, GPU
FAISS when the wheel has it) on a seeded uniform sample of at most k * points_per_centroid
vectors: beyond ~256 points per centroid the centroids barely move, and the cost of training
stays bounded as the corpus grows.
Assignment of every vector runs distributed over Ray (`assign`, one task per block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cola_ray.errors import UserError
from cola_ray.hashing import in_sample


@dataclass
class KMeansResult:
    centroids: np.ndarray  # [k, d] float32
    train_objective: float  # sum of squared distances on the training sample, best restart
    n_train: int
    restarts: int


def sample_fraction(n: int, k: int, points_per_centroid: int) -> float:
    return min(1.0, k * points_per_centroid / max(n, 1))


def train_kmeans(vectors: np.ndarray, k: int, seed: int, iters: int = 25, restarts: int = 3) -> KMeansResult:
    """k-means with several seeded restarts keeping the lowest objective. `vectors` must already
    be the training sample, in a deterministic (id) order.

    Each restart starts from k-means++ (scikit-learn's `kmeans_plusplus`) and runs FAISS's Lloyd
    iterations from there. FAISS alone starts from k random points, and on clustered data that
    leaves several centroids sharing one blob while others go unserved: on bench_clustering's 1M x
    64 mixture (k = 128) its objective was 12% above scikit-learn's KMeans(n_init=10), and 1-3%
    with this start, at ~1 s more per restart (docs/benchmarks.md)."""
    import faiss
    from sklearn.cluster import kmeans_plusplus

    n, d = vectors.shape
    if k > n:
        raise UserError(f"--num-samples {k}: only {n} candidate chunks to cluster")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    best = None
    for r in range(restarts):
        start, _ = kmeans_plusplus(x, k, random_state=(seed * 1000 + r) % 2**32)
        km = faiss.Kmeans(d, k, niter=iters, nredo=1, seed=seed + r, verbose=False,
                          max_points_per_centroid=max(1, (n + k - 1) // k),  # we sampled already
                          min_points_per_centroid=1, gpu=faiss.get_num_gpus() > 0)
        km.train(x, init_centroids=np.ascontiguousarray(start, dtype=np.float32))
        if best is None or km.obj[-1] < best[1]:
            best = (km.centroids.astype(np.float32).copy(), float(km.obj[-1]))
    return KMeansResult(best[0], best[1], n, restarts)


def train_on_sample(table: pa.Table, k: int, seed: int, points_per_centroid: int, iters: int,
                    restarts: int) -> KMeansResult:
    """train_kmeans on the seeded id-hash sample of `table` (id, vector; sorted by id) of at most
    k * points_per_centroid rows, or on every row when the sample came out smaller than k."""
    frac = sample_fraction(table.num_rows, k, points_per_centroid)
    train = table.filter(pa.array(in_sample(table.column("id").to_pylist(), frac, seed)))
    if train.num_rows < k:
        train = table
    return train_kmeans(vectors_of(train), k, seed, iters, restarts)


def assign(batch: pa.Table, centroids: np.ndarray) -> pa.Table:
    """Add `cluster` (nearest centroid) and `distance` (Euclidean) to each row's vector. Building
    a flat index over k centroids is a copy, so a plain Ray task per block is cheapest."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sq, label = index.search(vectors_of(batch), 1)
    batch = batch.append_column("cluster", pa.array(label[:, 0].astype(np.int32)))
    return batch.append_column("distance", pa.array(np.sqrt(np.maximum(sq[:, 0], 0)).astype(np.float32)))


def vectors_of(table: pa.Table) -> np.ndarray:
    """The fixed-size-list `vector` column as a contiguous [n, d] float32 array (zero-copy)."""
    col = table.column("vector").combine_chunks()
    d = col.type.list_size
    return np.ascontiguousarray(col.values.to_numpy(zero_copy_only=False).reshape(-1, d), np.float32)
