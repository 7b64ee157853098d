"""`cola`: the COLA sample selection (stage 3 of the paper) applied to a pool.

k-means with k = the number of samples over the chunks' projected activation vectors, then the
member nearest each centroid. This is the same computation as `cola-ray curate` (same hashed
training sample, same FAISS k-means, same nearest-to-centroid rule with ties by id), run on the
driver in one block: the selection is identical to curate's (tests check it). `cola-ray curate`
itself keeps its own distributed path (Ray tasks per block, or `--kmeans-mode distributed`);
this entry is for selecting from a pool that already exists.

Score (`distance`): Euclidean distance to the cluster centroid; `cluster_size`: cluster members.
"""

from __future__ import annotations

import pyarrow as pa

from cola_ray.selectors.registry import Pool, SelectorContext, register_selector
from cola_ray.stages import cluster, select


@register_selector("cola", description="COLA: k-means on activation vectors, nearest member per cluster",
                   score="distance to the cluster centroid (the cluster's nearest member)")
def cola_select(pool: Pool, k: int, ctx: SelectorContext) -> pa.Table:
    table = pool.read(["source", "num_tokens", "vector"])
    km = cluster.train_on_sample(table, k, ctx.seed, ctx.kmeans_points_per_centroid, ctx.kmeans_iters,
                                 ctx.kmeans_restarts)
    summary = select.summarize_clusters(cluster.assign(table, km.centroids).drop_columns(["vector"]))
    return pa.table({"id": summary.column("id"), "cluster": summary.column("cluster").cast(pa.int64()),
                     "distance": summary.column("distance").cast(pa.float64()),
                     "cluster_size": summary.column("members").cast(pa.int64())})
