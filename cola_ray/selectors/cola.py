"""`cola`: the COLA sample selection (the paper's third stage) applied to a pool.

k-means with k = the number of samples over the chunks' projected activation vectors, then the
member nearest each centroid (ties broken by id). Two ways to run the k-means (`kmeans_mode`):

- `local` (default): FAISS on the driver (stages/cluster.py): k-means++ starts, seeded
  restarts keeping the lowest objective, trained on a seeded id-hash sample of at most
  k * kmeans_points_per_centroid vectors; then every vector is assigned to its nearest centroid.
  The pool's vectors (n x proj_dim float32: 256 MB at 1M x 64) are held on the driver.
- `distributed`: Lloyd iterations over Ray actors that each hold a shard of the vectors
  (stages/kmeans_distributed.py), for pools too large for one node; the driver only ever holds
  the k centroids and the (id, cluster, distance) labels.

With stage-1 quotas the selection layer calls this once per source with k = its quota (a
k-means per source), like every other selector.

Score (`distance`): Euclidean distance to the cluster centroid; `cluster_size`: cluster members.
Artifacts: `centroids.npy` (k x proj_dim float32) and `embeddings/` (every clustered chunk:
id, source, num_tokens, cluster, distance, and its vector in local mode).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray.errors import UserError
from cola_ray.selectors.registry import Pool, Selection, SelectorContext, register_selector
from cola_ray.stages import cluster, select


@dataclass(frozen=True)
class KMeansParams:
    kmeans_iters: int = 25
    kmeans_restarts: int = 3
    kmeans_points_per_centroid: int = 256
    kmeans_mode: str = "local"

    def check(self) -> None:
        for name in ("kmeans_iters", "kmeans_restarts", "kmeans_points_per_centroid"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: out of range")
        if self.kmeans_mode not in ("local", "distributed"):
            raise UserError(f"--kmeans-mode {self.kmeans_mode!r}: expected one of local, distributed")


def _local(pool: Pool, k: int, ctx: SelectorContext):
    p: KMeansParams = ctx.params
    table = pool.read(["source", "num_tokens", "vector"])
    km = cluster.train_on_sample(table, k, ctx.seed, p.kmeans_points_per_centroid, p.kmeans_iters,
                                 p.kmeans_restarts)
    assigned = cluster.assign(table, km.centroids)
    details = {"train_objective": km.train_objective, "n_train": km.n_train, "restarts": km.restarts}
    return km.centroids, assigned, details


def _distributed(pool: Pool, k: int, ctx: SelectorContext):
    from cola_ray.stages.kmeans_distributed import VectorShards, assign, distributed_kmeans

    p: KMeansParams = ctx.params
    import ray

    with VectorShards.open(pool.dataset(["vector"]), num_workers=max(1, ctx.workers), cpus_per_worker=0.5) as shards:
        res = distributed_kmeans(shards, k, seed=ctx.seed, max_iter=p.kmeans_iters)
        labels = assign(shards, res.centroids)
        blocks = ray.get(labels.blocks)
    rows = pa.concat_tables(blocks).sort_by("id")
    meta = pool.read(["source", "num_tokens"])
    assigned = meta.join(rows, "id").sort_by("id")
    details = {"train_objective": float(res.objective), "n_train": -1, "restarts": 1, "iterations": res.iterations}
    return res.centroids.astype(np.float32), assigned, details


def cluster_members(pool: Pool, k: int, ctx: SelectorContext, params: KMeansParams) -> tuple[pa.Table, dict]:
    """COLA's clustering alone (the k-means of `params.kmeans_mode`), for selectors that choose
    their own member per cluster: every chunk's (id, cluster, distance), and the k-means details."""
    ctx = dataclasses.replace(ctx, params=params)
    _, assigned, details = (_distributed if params.kmeans_mode == "distributed" else _local)(pool, k, ctx)
    return assigned.select(["id", "cluster", "distance"]), details


def _merge(groups: list[tuple[str, int, int, dict]]) -> dict:
    """Per-source k-means (stage-1 quotas): totals over the sources, and each source's own."""
    return {
        "k": sum(k for _, k, _, _ in groups),
        "objective": sum(d["objective"] for *_, d in groups),
        "train_objective": sum(d["train_objective"] for *_, d in groups),
        "n_train": sum(d["n_train"] for *_, d in groups) if all(d["n_train"] >= 0 for *_, d in groups) else -1,
        "restarts": groups[0][3]["restarts"],
        "empty_clusters": [c + off for _, _, off, d in groups for c in d["empty_clusters"]],
        "groups": [{"source": s, "k": k, "n_train": d["n_train"], "train_objective": d["train_objective"]}
                   for s, k, _, d in groups],
    }


@register_selector("cola", description="COLA: k-means on activation vectors, nearest member per cluster",
                   score="distance to the cluster centroid (the cluster's nearest member)", params=KMeansParams,
                   merge_details=_merge)
def cola_select(pool: Pool, k: int, ctx: SelectorContext) -> Selection:
    centroids, assigned, details = (_distributed if ctx.params.kmeans_mode == "distributed" else _local)(pool, k, ctx)
    summary = select.summarize_clusters(assigned.drop_columns([c for c in ("vector",) if c in assigned.column_names]))
    d = assigned.column("distance").to_numpy().astype(np.float64)
    details = {"k": k, "objective": float(np.sum(d * d)), **details,
               "empty_clusters": select.empty_clusters(summary, k)}
    table = pa.table({"id": summary.column("id"), "cluster": summary.column("cluster").cast(pa.int64()),
                      "distance": summary.column("distance").cast(pa.float64()),
                      "cluster_size": summary.column("members").cast(pa.int64())})
    columns = [c for c in ("id", "source", "num_tokens", "vector", "cluster", "distance") if c in assigned.column_names]
    embeddings = assigned.select(columns)
    embeddings = embeddings.set_column(embeddings.schema.get_field_index("cluster"), "cluster",
                                       pc.cast(embeddings.column("cluster"), pa.int32()))
    return Selection(table, details, {"centroids.npy": centroids, "embeddings": embeddings})
