"""Stage 5: one representative per cluster, the member nearest its centroid (ties by id).

A map-reduce: every block is summarised per cluster (best row, member count, sum of squared
distances) in parallel over Ray, and the driver summarises the summaries with the same function,
so the result does not depend on how rows were split into blocks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SUMMARY_COLUMNS = ("id", "source", "num_tokens", "cluster", "distance", "members", "sq_sum")


def summarize_clusters(table: pa.Table) -> pa.Table:
    """Rows (id, source, num_tokens, cluster, distance[, members, sq_sum]) -> one row per cluster:
    the row with the smallest (distance, id), plus the cluster's member count and the sum of its
    squared distances (the k-means objective, summed over clusters)."""
    if "members" not in table.column_names:
        d = table.column("distance").to_numpy().astype(np.float64)
        table = table.append_column("members", pa.array(np.ones(len(d), np.int64)))
        table = table.append_column("sq_sum", pa.array(d * d))
    table = table.select(list(SUMMARY_COLUMNS))
    if table.num_rows == 0:
        return table
    totals = table.group_by("cluster").aggregate([("members", "sum"), ("sq_sum", "sum")])
    ordered = table.sort_by([("cluster", "ascending"), ("distance", "ascending"), ("id", "ascending")])
    clusters = ordered.column("cluster").to_numpy()
    first = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1]])
    best = ordered.take(pa.array(first)).drop_columns(["members", "sq_sum"]).join(totals, "cluster")
    best = best.rename_columns([{"members_sum": "members", "sq_sum_sum": "sq_sum"}.get(c, c) for c in best.column_names])
    return best.select(list(SUMMARY_COLUMNS)).sort_by("cluster")


def empty_clusters(summary: pa.Table, k: int) -> list[int]:
    present = set(pc.unique(summary.column("cluster")).to_pylist()) if summary.num_rows else set()
    return [c for c in range(k) if c not in present]
