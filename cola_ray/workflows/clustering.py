"""Stage 3 of a curate run: FAISS k-means over the embedded chunks and one representative per
cluster (nearest to its centroid). Without quotas: one k-means with k = --num-samples over
every source, as always. With stage 1's quotas: one k-means per source with k = its quota, each
source's chunks assigned among its own centroids, cluster ids numbered through the sources in
name order, so the selection has exactly each source's quota.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.config import CurateConfig
from cola_ray.errors import UserError
from cola_ray.stages import cluster, select
from cola_ray.workflows.common import RunClock


def target_k(cfg: CurateConfig, n_embedded: int) -> int:
    k = cfg.num_samples
    if n_embedded < k:
        if not cfg.allow_fewer:
            raise UserError(f"--num-samples {k}: only {n_embedded} candidate chunks survived processing "
                            f"(pass --allow-fewer to select them all)")
        k = n_embedded
    if n_embedded == 0:
        raise UserError("--corpus: no chunk survived processing; nothing to select")
    return k


def _train(cfg: CurateConfig, vectors: pa.Table, k: int) -> cluster.KMeansResult:
    return cluster.train_on_sample(vectors, k, cfg.seed, cfg.kmeans_points_per_centroid, cfg.kmeans_iters,
                                   cfg.kmeans_restarts)


def _train_distributed(cfg: CurateConfig, embedded, k: int) -> cluster.KMeansResult:
    """--kmeans-mode distributed: Lloyd iterations over Ray actors that each hold a shard of the
    vectors; the driver only ever holds k centroids (stages/kmeans_distributed.py)."""
    from cola_ray.stages.kmeans_distributed import distributed_kmeans

    res = distributed_kmeans(embedded.select_columns(["id", "vector"]), k, seed=cfg.seed,
                             num_workers=max(1, cfg.workers), max_iter=cfg.kmeans_iters, cpus_per_worker=0.5)
    return cluster.KMeansResult(res.centroids, float(res.objective), -1, 1)


def cluster_and_select(cfg: CurateConfig, shard_uris: list[str], n_embedded: int, clock: RunClock,
                       quotas: dict[str, int] | None = None):
    """k-means and one representative per cluster. With `quotas` (source -> samples), each source
    with a quota is clustered alone with k = its quota and its chunks are assigned among its own
    centroids; cluster ids run through the sources in name order."""
    import ray

    fs, _ = storage.filesystem(cfg.out)
    k = target_k(cfg, n_embedded)
    paths = [storage.filesystem(u)[1] for u in shard_uris]
    from ray.data.expressions import col

    embedded = (ray.data.read_parquet(paths, filesystem=fs)
                .select_columns(["id", "source", "num_tokens", "vector", "drop"])
                .filter(expr=col("drop") == "").drop_columns(["drop"]))
    groups = [(None, k)] if quotas is None else [(s, q) for s, q in sorted(quotas.items()) if q > 0]
    with clock("cluster"):
        if cfg.kmeans_mode == "distributed":
            results = [_train_distributed(cfg, embedded if src is None else embedded.filter(expr=col("source") == src), n)
                       for src, n in groups]
        else:
            vectors = storage.read_parquet(shard_uris, ["id", "source", "vector"],
                                           filter=pc.field("drop") == "").sort_by("id")
            results = [_train(cfg, vectors if src is None else vectors.filter(pc.equal(vectors.column("source"), src)), n)
                       for src, n in groups]
            del vectors
        km = results[0] if len(results) == 1 else cluster.KMeansResult(
            np.vstack([r.centroids for r in results]), sum(r.train_objective for r in results),
            sum(r.n_train for r in results) if all(r.n_train >= 0 for r in results) else -1, results[0].restarts)
        offsets = np.cumsum([0] + [n for _, n in groups])[:-1].tolist()
        layout = None if quotas is None else [(src, off, n) for (src, n), off in zip(groups, offsets)]
    with clock("assign+select"):
        emb_dir = storage.join(cfg.out, "embeddings")
        storage.delete(emb_dir)
        summaries = embedded.map_batches(_assign_write_summarize, fn_args=(km.centroids, emb_dir, layout),
                                         batch_format="pyarrow")
        summary = select.summarize_clusters(pa.concat_tables(ray.get(summaries.to_arrow_refs())))
        objective = float(pc.sum(summary.column("sq_sum")).as_py())
        texts = storage.read_parquet(shard_uris, ["id", "text"], filter=pc.field("id").isin(summary.column("id")))
        selected = summary.join(texts, "id").sort_by([("cluster", "ascending")])
    per_group = [] if quotas is None else [
        {"source": src, "k": n, "n_train": r.n_train, "train_objective": r.train_objective}
        for (src, n), r in zip(groups, results)]
    return km, k, objective, selected, per_group


def _assign_write_summarize(batch: pa.Table, centroids: np.ndarray, emb_dir: str, layout=None) -> pa.Table:
    """One Ray task per block: assign to centroids, write the block's embeddings file, and return
    only its per-cluster summary (k rows at most) to the driver."""
    assigned = cluster.assign(batch, centroids) if layout is None else _assign_within_sources(batch, centroids, layout)
    name = hashlib.sha1("\n".join(assigned.column("id").to_pylist()).encode()).hexdigest()[:20]
    storage.write_parquet(storage.join(emb_dir, f"part-{name}.parquet"), assigned)
    if layout is not None:
        assigned = assigned.filter(pc.greater_equal(assigned.column("cluster"), 0))
    return select.summarize_clusters(assigned.drop_columns(["vector"]))


def _assign_within_sources(batch: pa.Table, centroids: np.ndarray, layout: list) -> pa.Table:
    """Each source's rows to the nearest of its own centroids (`layout`: (source, offset, k));
    rows of sources without a quota get cluster -1 and no distance."""
    parts = []
    for source, offset, n in layout:
        rows = batch.filter(pc.equal(batch.column("source"), source))
        if rows.num_rows:
            part = cluster.assign(rows, centroids[offset: offset + n])
            shifted = pc.add(part.column("cluster"), pa.scalar(offset, pa.int32()))
            parts.append(part.set_column(part.schema.get_field_index("cluster"), "cluster", shifted))
    rest = batch.filter(pc.invert(pc.is_in(batch.column("source"), pa.array([s for s, _, _ in layout]))))
    if rest.num_rows or not parts:
        parts.append(rest.append_column("cluster", pa.array(np.full(rest.num_rows, -1, np.int32)))
                     .append_column("distance", pa.array(np.full(rest.num_rows, np.nan, np.float32))))
    return pa.concat_tables(parts).sort_by("id")
