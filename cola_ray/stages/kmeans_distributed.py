"""Scale-out k-means: Lloyd's algorithm over vectors held by several Ray actors.

The single-node path (`cluster.py`) trains `faiss.Kmeans` on one machine, which needs every
training vector in one process. FAISS has no multi-node k-means, so this module writes the
distributed loop by hand and leaves only the arithmetic to libraries:

- each actor loads its shard once (a split of a Ray Dataset, or chunks it generates itself
  from a `ChunkSource`) and keeps it in memory for every pass; the driver only sees k x d sums;
- per pass an actor labels its rows with FAISS (`IndexFlatL2.search`) and returns, per centroid,
  integer partial sums and counts plus the partial objective; the driver adds them up and moves
  the centroids (Lloyd), re-seeding empty clusters by splitting the largest one as FAISS does;
- the start is k-means++ (scikit-learn) on a seeded sample chosen by a hash of each row's id.

Same seed => same centroids, whatever the number of actors: the sample depends on ids, not on
where rows live; partial sums are exact int64 fixed-point sums, so adding them in any grouping
gives the same bits; and FAISS is kept on its per-row distance kernel (see `_ShardWorker`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import ray
from ray.actor import ActorHandle
from ray.data import Dataset

from cola_ray.errors import UserError
from cola_ray.stages.kmeans_maths import fixed, fixed_exponent, seeded, updated_centroids, vectors_from_arrow

CHUNK_ROWS = 65_536
"""Rows an actor hands to FAISS at once: large enough to amortise the call, small enough that the
float64/int64 temporaries of one chunk stay in the tens of MB."""

_ID_HASH_KEY = "cola-ray-kmeans!"  # 16-byte SipHash key for pandas' string hashing


@runtime_checkable
class ChunkSource(Protocol):
    """Rows that actors produce themselves, chunk by chunk, instead of reading a Dataset: so a
    benchmark can cluster 10M rows that neither the driver nor the object store ever holds (e.g.
    bench/synthetic.py's Gaussian mixture). The object is sent to every actor (it must pickle
    and be importable there); actor j calls `chunk(i)` for its share of `range(num_chunks)`.
    `chunk(i)` returns string ids (pa.Array) and (rows, dim) float32 vectors and must depend on
    `i` alone, so the rows are the same whatever the number of actors."""

    @property
    def num_chunks(self) -> int: ...

    def chunk(self, index: int) -> tuple[pa.Array, np.ndarray]: ...


@dataclass(frozen=True)
class DistributedKMeansResult:
    """What a run produced; `objectives[i]` is the sum of squared distances when pass i labelled
    the rows (FAISS's convention), so `objective` is measured before the last centroid move."""

    centroids: np.ndarray  # (k, d) float32
    objective: float
    iterations: int
    objectives: list[float]
    empty_reseeded: list[int]  # clusters re-seeded after each pass
    converged: bool  # stopped on `tol` rather than `max_iter`
    init_seconds: float
    iteration_seconds: list[float]


@dataclass(frozen=True)
class Assignment:
    """The final labelling: one Arrow table per worker in the object store (they outlive the
    actors), with the columns and types of `cluster.assign`'s output, so that
    `select.summarize_clusters` picks the same representatives as on the single-node path."""

    blocks: list[ray.ObjectRef]  # pa.Table: id (string), cluster (int32), distance (float32, L2)
    counts: np.ndarray  # (k,) int64 members per cluster
    objective: float  # sum of squared distances to the given centroids

    def rows(self) -> Dataset:
        """The blocks as a Dataset. Ray Data runs a task per block to read its metadata: when the
        actors hold all of the cluster's CPUs, close the `VectorShards` first."""
        return ray.data.from_arrow_refs(self.blocks)


@dataclass
class _Chunk:
    ids: pa.Array  # an owned copy: a view would pin the whole object-store block in memory
    keys: np.ndarray  # uint64 hash of each id, the seed-free half of the sampling key
    vectors: np.ndarray  # (rows, dim) float32, C-contiguous


@dataclass(frozen=True)
class _ShardStats:
    rows: int
    dim: int | None
    max_abs: float


@ray.remote
class _ShardWorker:
    """Holds one shard for the life of a `VectorShards`, so passes cost compute, not transfer."""

    def __init__(self, threads: int) -> None:
        faiss.omp_set_num_threads(threads)
        # For batches of 20+ queries FAISS computes L2 through a GEMM, whose rounding depends on
        # where a row sits in the batch, so a row could get another label under another shard
        # split. The direct per-pair SIMD kernel gives a row the same distances wherever it sits,
        # and at d=64 it measured as fast (16.6 vs 15.6 GFLOP/s on one core of the dev machine).
        faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
        self._chunks: list[_Chunk] = []
        self._max_abs = 0.0

    def load_dataset(self, shard: Dataset, id_column: str, vector_column: str,
                     chunk_rows: int) -> _ShardStats:
        for batch in shard.iter_batches(batch_size=chunk_rows, batch_format="pyarrow"):
            missing = [c for c in (id_column, vector_column) if c not in batch.column_names]
            if missing:
                raise UserError(f"column {missing[0]!r} not in the dataset "
                                f"(columns: {', '.join(batch.column_names)})")
            ids = batch.column(id_column)
            if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
                raise UserError(f"id column {id_column!r} must hold strings, not {ids.type}")
            if batch.num_rows:
                self._add(ids, vectors_from_arrow(batch.column(vector_column), vector_column))
        return self._stats()

    def load_chunks(self, source: ChunkSource, chunk_indices: list[int]) -> _ShardStats:
        for index in chunk_indices:
            self._add(*source.chunk(index))
        return self._stats()

    def sample(self, seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seeded keys, ids and vectors of this shard's `size` rows with the smallest seeded key
        (ties at the cut all kept): the driver's global cut of the union is then exact."""
        if not self._chunks:
            return np.empty(0, np.uint64), np.empty(0, str), np.empty((0, 0), np.float32)
        keys = seeded(np.concatenate([c.keys for c in self._chunks]), seed)
        rows = np.arange(len(keys))
        if len(keys) > size:
            rows = np.flatnonzero(keys <= np.partition(keys, size - 1)[size - 1])
        starts = np.cumsum([0] + [len(c.keys) for c in self._chunks])
        owner = np.searchsorted(starts, rows, side="right") - 1
        ids, vectors = [], []
        for i in np.unique(owner):
            local = rows[owner == i] - starts[i]
            ids.append(self._chunks[i].ids.take(local).to_numpy(zero_copy_only=False))
            vectors.append(self._chunks[i].vectors[local])
        return keys[rows], np.concatenate(ids).astype(str), np.concatenate(vectors)

    def lloyd_step(self, centroids: np.ndarray, sum_exp: int,
                   cost_exp: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-centroid int64 fixed-point sums (scaled by 2**sum_exp), counts, and the objective
        (scaled by 2**cost_exp) of this shard under `centroids`."""
        k, dim = centroids.shape
        sums = np.zeros((k, dim), np.int64)
        counts, cost = np.zeros(k, np.int64), 0
        for chunk, labels, dist in self._labelled(centroids):
            order = np.argsort(labels, kind="stable")
            present, starts = np.unique(labels[order], return_index=True)
            sums[present] += np.add.reduceat(fixed(chunk.vectors[order], sum_exp), starts, axis=0)
            counts += np.bincount(labels, minlength=k)
            cost += int(fixed(dist, cost_exp).sum())
        return sums, counts, cost

    def assign(self, centroids: np.ndarray, cost_exp: int) -> tuple[pa.Table, np.ndarray, int]:
        """Rows (id, cluster, distance), counts and the scaled objective of this shard."""
        k = len(centroids)
        tables = []
        counts, cost = np.zeros(k, np.int64), 0
        for chunk, labels, dist in self._labelled(centroids):
            tables.append(pa.table({
                "id": chunk.ids, "cluster": labels.astype(np.int32),
                "distance": np.sqrt(np.maximum(dist, 0)).astype(np.float32)}))
            counts += np.bincount(labels, minlength=k)
            cost += int(fixed(dist, cost_exp).sum())
        schema = pa.schema([("id", pa.string()), ("cluster", pa.int32()),
                            ("distance", pa.float32())])
        return pa.concat_tables(tables) if tables else schema.empty_table(), counts, cost

    def _labelled(self, centroids: np.ndarray) -> Iterator[tuple[_Chunk, np.ndarray, np.ndarray]]:
        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(centroids)
        for chunk in self._chunks:
            dist, labels = index.search(chunk.vectors, 1)
            yield chunk, labels[:, 0], dist[:, 0]

    def _add(self, ids: pa.Array | pa.ChunkedArray, vectors: np.ndarray) -> None:
        id_values = ids.to_numpy(zero_copy_only=False)
        if self._chunks and vectors.shape[1] != self._chunks[0].vectors.shape[1]:
            raise UserError(f"vectors of length {vectors.shape[1]} and "
                            f"{self._chunks[0].vectors.shape[1]} in one dataset")
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            raise UserError(f"vector of row id {id_values[np.argmin(finite)]!r} is not finite")
        self._max_abs = max(self._max_abs, float(np.abs(vectors).max()))
        keys = pd.util.hash_array(id_values, hash_key=_ID_HASH_KEY, categorize=False)
        self._chunks.append(_Chunk(pa.array(id_values, pa.string()), keys, vectors))

    def _stats(self) -> _ShardStats:
        dim = self._chunks[0].vectors.shape[1] if self._chunks else None
        return _ShardStats(sum(len(c.keys) for c in self._chunks), dim, self._max_abs)


class VectorShards:
    """Vectors spread over Ray actors that keep them between passes; open one to run
    `distributed_kmeans` and then `assign` without loading the data twice. Each actor holds
    `cpus_per_worker` CPUs while open."""

    def __init__(self, workers: list[ActorHandle], stats: list[_ShardStats]) -> None:
        self.workers = workers
        self.rows_per_worker = [s.rows for s in stats]
        self.num_rows = sum(self.rows_per_worker)
        dims = sorted({s.dim for s in stats if s.rows})
        if not self.num_rows:
            self.close()
            raise UserError("no vectors to cluster: the dataset has no rows")
        if len(dims) > 1:
            self.close()
            raise UserError(f"vectors of different lengths in one dataset: {dims}")
        self.dim: int = dims[0]
        self.max_abs = max(s.max_abs for s in stats)

    @classmethod
    def open(cls, source: Dataset | ChunkSource, *, num_workers: int = 2,
             cpus_per_worker: float = 1.0, id_column: str = "id", vector_column: str = "vector",
             chunk_rows: int = CHUNK_ROWS) -> VectorShards:
        """Start `num_workers` actors and load `source` into them (a Dataset's columns
        `id_column`, string, and `vector_column`, fixed-length float list or tensor; or the chunks
        of a `ChunkSource`, generated inside the actors)."""
        if num_workers < 1:
            raise UserError(f"num_workers must be at least 1, got {num_workers}")
        if cpus_per_worker <= 0:
            raise UserError(f"cpus_per_worker must be positive, got {cpus_per_worker}")
        if not isinstance(source, (Dataset, ChunkSource)):
            raise UserError(f"cannot cluster a {type(source).__name__}: pass a ray.data.Dataset "
                            "or a ChunkSource (num_chunks, chunk(i) -> (ids, vectors))")

        def start() -> list[ActorHandle]:
            return [_ShardWorker.options(num_cpus=cpus_per_worker).remote(
                max(1, int(cpus_per_worker))) for _ in range(num_workers)]

        if isinstance(source, Dataset):
            # Run the pipeline before the actors take their CPUs: streamed into actors that hold
            # every CPU, its read/map tasks would wait forever (seen on a 2-CPU cluster). The
            # blocks sit in the object store (spilling to disk if need be) only until loaded.
            materialized = source.materialize()
            workers = start()
            loads = [w.load_dataset.remote(s, id_column, vector_column, chunk_rows) for w, s in
                     zip(workers, materialized.split(num_workers, locality_hints=workers))]
        else:
            workers = start()
            parts = np.array_split(np.arange(source.num_chunks), num_workers)
            loads = [w.load_chunks.remote(source, p.tolist()) for w, p in zip(workers, parts)]
        try:
            stats = _gather(loads)
        except BaseException:
            _kill(workers)
            raise
        return cls(workers, stats)

    def close(self) -> None:
        _kill(self.workers)
        self.workers = []

    def __enter__(self) -> VectorShards:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def distributed_kmeans(data: Dataset | ChunkSource | VectorShards, k: int, *, seed: int = 0,
                       num_workers: int = 2, max_iter: int = 25, tol: float = 1e-4,
                       sample_per_centroid: int = 16, init: np.ndarray | None = None,
                       cpus_per_worker: float = 1.0) -> DistributedKMeansResult:
    """Lloyd's k-means over vectors that stay on Ray actors.

    `data` already loaded (`VectorShards`) is used as is; a Dataset or ChunkSource is loaded
    into `num_workers` actors for this call only. The start is k-means++ on
    min(n, k * sample_per_centroid) rows picked by a seeded hash of their ids (k-means++ costs
    k^2 * sample_per_centroid distance evaluations, ~9 s at k=1024 with the default 16; Lloyd then
    runs on every row), or `init` (k x d) if given. Stops when a pass improves the objective by
    less than `tol` (relative) or after `max_iter` passes."""
    for name, value, low in (("k", k, 1), ("seed", seed, 0), ("max_iter", max_iter, 1),
                             ("sample_per_centroid", sample_per_centroid, 1)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    if not tol >= 0:
        raise UserError(f"tol must be >= 0, got {tol!r}")
    if isinstance(data, VectorShards):
        return _train(data, k, seed, max_iter, tol, sample_per_centroid, init)
    with VectorShards.open(data, num_workers=num_workers,
                           cpus_per_worker=cpus_per_worker) as shards:
        return _train(shards, k, seed, max_iter, tol, sample_per_centroid, init)


def assign(shards: VectorShards, centroids: np.ndarray) -> Assignment:
    """Label every row with its nearest centroid; the rows stay in the object store."""
    centroids = _checked_centroids("centroids", centroids, len(centroids), shards.dim)
    cost_exp = _cost_exponent(shards, centroids)
    centroids_ref = ray.put(centroids)
    calls = [w.assign.options(num_returns=3).remote(centroids_ref, cost_exp)
             for w in shards.workers]
    counts = _gather([call[1] for call in calls])
    costs = _gather([call[2] for call in calls])
    return Assignment(blocks=[call[0] for call in calls], counts=np.sum(counts, axis=0),
                      objective=math.ldexp(sum(costs), -cost_exp))


def _train(shards: VectorShards, k: int, seed: int, max_iter: int, tol: float,
           sample_per_centroid: int, init: np.ndarray | None) -> DistributedKMeansResult:
    if k > shards.num_rows:
        raise UserError(f"k={k} is more than the {shards.num_rows} vectors to cluster")
    start = time.perf_counter()
    centroids = (_checked_centroids("init", init, k, shards.dim) if init is not None
                 else _kmeans_plus_plus(shards, k, seed, k * sample_per_centroid))
    init_seconds = time.perf_counter() - start
    sum_exp = fixed_exponent(shards.max_abs, shards.num_rows)
    objectives: list[float] = []
    reseeded: list[int] = []
    seconds: list[float] = []
    converged = False
    for step in range(max_iter):
        start = time.perf_counter()
        cost_exp = _cost_exponent(shards, centroids)
        centroids_ref = ray.put(centroids)
        parts = _gather([w.lloyd_step.remote(centroids_ref, sum_exp, cost_exp)
                         for w in shards.workers])
        objectives.append(math.ldexp(sum(p[2] for p in parts), -cost_exp))
        spread = math.sqrt(objectives[-1] / (shards.num_rows * shards.dim))
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(step,)))
        centroids, empty = updated_centroids(np.sum([p[0] for p in parts], axis=0),
                                              np.sum([p[1] for p in parts], axis=0), sum_exp,
                                              spread, rng)
        reseeded.append(empty)
        seconds.append(time.perf_counter() - start)
        if step and reseeded[-2] == 0 and objectives[-2] - objectives[-1] <= tol * objectives[-2]:
            converged = True
            break
    return DistributedKMeansResult(centroids, objectives[-1], len(objectives), objectives,
                                   reseeded, converged, init_seconds, seconds)


def _kmeans_plus_plus(shards: VectorShards, k: int, seed: int, size: int) -> np.ndarray:
    """k-means++ on the `size` rows with the smallest seeded id hash: a uniform sample that does
    not depend on which actor holds which row (sorted by key, then id, before use)."""
    from sklearn.cluster import kmeans_plusplus  # driver only: spares each actor a 2 s import
    from threadpoolctl import threadpool_limits

    parts = _gather([w.sample.remote(seed, size) for w in shards.workers])
    keys = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    vectors = np.concatenate([p[2] for p in parts if len(p[2])])
    order = np.lexsort((ids, keys))[:size]
    # k-means++ is k small BLAS calls; multi-threaded OpenBLAS spins between them and collapses
    # when the cores are shared (k=1024 on 16k rows: 117 s on 2 busy cores, 9 s single-threaded).
    with threadpool_limits(1):
        centroids, _ = kmeans_plusplus(vectors[order], k, random_state=seed % 2**32)
    return np.ascontiguousarray(centroids, dtype=np.float32)


def _checked_centroids(name: str, centroids: np.ndarray, k: int, dim: int) -> np.ndarray:
    values = np.ascontiguousarray(centroids, dtype=np.float32)
    if values.shape != (k, dim) or k < 1:
        raise UserError(f"{name} must have shape ({k}, {dim}), got {values.shape}")
    if not np.isfinite(values).all():
        raise UserError(f"{name} contains non-finite values")
    return values


def _cost_exponent(shards: VectorShards, centroids: np.ndarray) -> int:
    """Fixed-point scale for objectives: no row is farther than dim * (max|x| + max|c|)^2
    (x2 for float32 rounding)."""
    reach = shards.max_abs + float(np.abs(centroids).max())
    return fixed_exponent(2 * shards.dim * reach * reach, shards.num_rows)


def _gather(refs: list[ray.ObjectRef]) -> list:
    """ray.get that turns an actor's UserError back into a one-line UserError."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):
            raise UserError(str(err.cause)) from None
        raise


def _kill(workers: list[ActorHandle]) -> None:
    for worker in workers:
        ray.kill(worker)
