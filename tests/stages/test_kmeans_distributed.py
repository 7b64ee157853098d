"""Scale-out k-means against single-node FAISS, and the same answer from 1 or 2 workers."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest

from bench.synthetic import SyntheticBlobs
from cola_ray.errors import UserError
from cola_ray.stages import cluster, select
from cola_ray.stages.kmeans_distributed import VectorShards, assign, distributed_kmeans

K = 32
# 20k x 16 rows around 32 well-separated blobs, generated in 2500-row chunks.
SPEC = SyntheticBlobs(num_rows=20_000, dim=16, num_blobs=K, blob_spread=5.0, seed=7,
                      chunk_rows=2_500)
# Half a CPU per worker keeps the two fixtures plus a transient pair of actors inside the suite's
# 4-CPU Ray session, with CPUs left for Ray Data's own tasks.
CPUS = 0.5


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    parts = [SPEC.chunk(i) for i in range(SPEC.num_chunks)]
    ids = np.concatenate([p[0].to_numpy(zero_copy_only=False) for p in parts]).astype(str)
    return ids, np.concatenate([p[1] for p in parts])


def _table(ids: np.ndarray, x: np.ndarray) -> pa.Table:
    return pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()),
                                                                           x.shape[1])})


def _dataset(ray, ids: np.ndarray, x: np.ndarray, block_rows: int):
    """The same rows as a Ray Dataset (fixed-size-list vectors), in blocks unlike SPEC's chunks."""
    return ray.data.from_arrow([_table(ids[s:s + block_rows], x[s:s + block_rows])
                                for s in range(0, len(ids), block_rows)])


@pytest.fixture(scope="module")
def one_worker(ray_session, rows):
    with VectorShards.open(_dataset(ray_session, *rows, 3_000), num_workers=1,
                           cpus_per_worker=CPUS) as shards:
        yield shards


@pytest.fixture(scope="module")
def two_workers(ray_session, rows):
    with VectorShards.open(_dataset(ray_session, *rows, 1_700), num_workers=2,
                           cpus_per_worker=CPUS) as shards:
        yield shards


def _objective(x: np.ndarray, centroids: np.ndarray) -> float:
    dist, _ = faiss.knn(x, centroids, 1)
    return float(dist.astype(np.float64).sum())


def test_objective_no_worse_than_single_node_faiss(two_workers, rows):
    x = rows[1]
    result = distributed_kmeans(two_workers, K, seed=0)
    single = faiss.Kmeans(x.shape[1], K, niter=25, nredo=3, seed=0, max_points_per_centroid=1000)
    single.train(x)
    assert result.centroids.shape == (K, x.shape[1]) and result.centroids.dtype == np.float32
    assert result.iterations == len(result.objectives) <= 25
    assert _objective(x, result.centroids) <= 1.01 * _objective(x, single.centroids)


def test_lloyd_passes_match_faiss_from_the_same_start(two_workers, rows):
    x = rows[1]
    result = distributed_kmeans(two_workers, K, init=x[:K], tol=0.0, max_iter=25)
    single = faiss.Kmeans(x.shape[1], K, niter=25, max_points_per_centroid=1000)
    single.train(x, init_centroids=x[:K].copy())
    # Same algorithm, same start: the same objective every pass (FAISS's GEMM distances round
    # differently, which can move a borderline row and so a centroid by a little).
    np.testing.assert_allclose(result.objectives, single.obj, rtol=1e-4)


def test_same_result_with_one_or_two_workers_and_synthetic_source(one_worker, two_workers):
    one = distributed_kmeans(one_worker, K, seed=3)
    two = distributed_kmeans(two_workers, K, seed=3)
    synthetic = distributed_kmeans(SPEC, K, seed=3, num_workers=2, cpus_per_worker=CPUS)
    for other in (two, synthetic):
        np.testing.assert_array_equal(one.centroids, other.centroids)
        assert one.objectives == other.objectives
    labels = [assign(s, one.centroids) for s in (one_worker, two_workers)]
    frames = [a.rows().to_pandas().sort_values("id", ignore_index=True) for a in labels]
    assert frames[0].equals(frames[1])
    assert labels[0].objective == labels[1].objective


def _representatives(assigned: pa.Table) -> list[str]:
    """Ids the selection stage keeps (it also carries source and token counts along)."""
    assigned = assigned.append_column("source", pa.array(["s"] * len(assigned)))
    assigned = assigned.append_column("num_tokens", pa.array(np.ones(len(assigned), np.int64)))
    return select.summarize_clusters(assigned).column("id").to_pylist()


def test_assignment_matches_the_single_node_path(two_workers, rows):
    ids, x = rows
    centroids = distributed_kmeans(two_workers, K, seed=1).centroids
    result = assign(two_workers, centroids)
    ours = pa.Table.from_pandas(result.rows().to_pandas().set_index("id").loc[ids].reset_index(),
                                preserve_index=False)
    single = cluster.assign(_table(ids, x), centroids).drop_columns(["vector"])
    assert ours.schema.equals(single.schema)
    agree = ours.column("cluster").to_numpy() == single.column("cluster").to_numpy()
    assert agree.mean() > 0.999  # FAISS's GEMM and direct kernels may split a float tie
    np.testing.assert_allclose(ours.column("distance").to_numpy(),
                               single.column("distance").to_numpy(), rtol=1e-4, atol=1e-3)
    assert _representatives(ours) == _representatives(single)
    np.testing.assert_array_equal(result.counts, np.bincount(ours.column("cluster"), minlength=K))
    squared = ours.column("distance").to_numpy().astype(np.float64) ** 2
    assert result.objective == pytest.approx(squared.sum(), rel=1e-5)


def test_empty_clusters_are_reseeded_by_splitting(two_workers, rows):
    x = rows[1]
    far = np.full((2, x.shape[1]), 1e3, np.float32)  # no row is nearest to these
    result = distributed_kmeans(two_workers, K, init=np.vstack([x[:K - 2], far]), tol=0.0,
                                max_iter=25)
    assert result.empty_reseeded[0] == 2
    assert np.isfinite(result.centroids).all()
    final = assign(two_workers, result.centroids)
    assert (final.counts > 0).all()
    assert final.objective < result.objectives[0]


@pytest.mark.parametrize("k", [0, -3, 20_001, 2.5])
def test_bad_k_is_a_user_error(two_workers, k):
    with pytest.raises(UserError, match=f"k.*{k}"):
        distributed_kmeans(two_workers, k)


def test_ragged_vectors_are_a_user_error(ray_session):
    ds = ray_session.data.from_items([{"id": "a", "vector": [1.0, 2.0]},
                                      {"id": "b", "vector": [1.0, 2.0, 3.0]}])
    with pytest.raises(UserError, match="'vector'") as err:
        distributed_kmeans(ds, 1, num_workers=1, cpus_per_worker=CPUS)
    assert "\n" not in str(err.value)
