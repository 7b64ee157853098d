import numpy as np
import pyarrow as pa

from cola_ray.stages import cluster, select


def _table(n=2000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, d)) * 5
    x = (centers[rng.integers(0, 10, n)] + rng.normal(size=(n, d))).astype(np.float32)
    return pa.table({"id": [f"doc:{i:05d}#0" for i in range(n)], "source": ["s"] * n,
                     "num_tokens": np.full(n, 100, np.int32),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d)}), x


def test_each_selected_chunk_is_nearest_to_its_centroid():
    table, x = _table()
    km = cluster.train_kmeans(x, 10, seed=0, iters=10, restarts=2)
    assigned = cluster.assign(table, km.centroids)
    summary = select.summarize_clusters(assigned.drop_columns(["vector"]))
    assert summary.num_rows == 10
    labels = assigned.column("cluster").to_numpy()
    for row in summary.to_pylist():
        members = np.flatnonzero(labels == row["cluster"])
        dist = np.linalg.norm(x[members] - km.centroids[row["cluster"]], axis=1)
        assert row["id"] == table.column("id")[members[np.argmin(dist)]].as_py()
        assert row["members"] == len(members)
    objective = float(((x - km.centroids[labels]) ** 2).sum())
    assert abs(summary.column("sq_sum").to_numpy().sum() - objective) / objective < 1e-4


def test_summary_does_not_depend_on_block_split():
    table, x = _table(600)
    km = cluster.train_kmeans(x, 10, seed=0, iters=10, restarts=1)
    assigned = cluster.assign(table, km.centroids).drop_columns(["vector"])
    whole = select.summarize_clusters(assigned)
    parts = [select.summarize_clusters(assigned.slice(i, 97)) for i in range(0, 600, 97)]
    merged = select.summarize_clusters(pa.concat_tables(parts))
    assert merged.select(["id", "cluster", "members"]).equals(whole.select(["id", "cluster", "members"]))


def test_ties_broken_by_id():
    t = pa.table({"id": ["b", "a", "c"], "source": ["s"] * 3, "num_tokens": [1, 1, 1],
                  "cluster": [0, 0, 0], "distance": [0.5, 0.5, 0.7]})
    assert select.summarize_clusters(t).column("id").to_pylist() == ["a"]


def test_hash_sample_is_order_independent():
    ids = [f"x{i}" for i in range(5000)]
    m = cluster.in_sample(ids, 0.2, seed=3)
    assert 800 < m.sum() < 1200
    rev = cluster.in_sample(ids[::-1], 0.2, seed=3)[::-1]
    np.testing.assert_array_equal(m, rev)
