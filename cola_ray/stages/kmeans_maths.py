"""The pure maths of the distributed k-means (stages/kmeans_distributed.py runs it on Ray
actors): exact fixed-point sums, the Lloyd mean step with FAISS-style splitting of empty
clusters, the seeded row hash of the k-means++ sample, and vector columns as arrays. Tested
without Ray through the distributed tests' single-actor cases."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from cola_ray.errors import UserError

SPLIT_EPS = 1.0 / 1024  # relative nudge FAISS gives the two halves of a split cluster


def updated_centroids(sums: np.ndarray, counts: np.ndarray, sum_exp: int, spread: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Lloyd's mean step. Written by hand because FAISS's cluster splitting lives inside its
    single-node train loop: each empty cluster (in index order) takes half of the then largest
    one, the two centroids pushed apart by a seeded +-1/1024 of (|c| + rms spread) per axis."""
    filled = counts > 0
    centroids = np.zeros(sums.shape, np.float32)
    means = np.ldexp(sums[filled].astype(np.float64), -sum_exp) / counts[filled][:, None]
    centroids[filled] = means
    sizes = counts.astype(np.float64)
    empty = np.flatnonzero(~filled)
    for target in empty:
        source = int(np.argmax(sizes))
        nudge = (SPLIT_EPS * (np.abs(centroids[source]) + spread)
                 * rng.choice([-1.0, 1.0], size=sums.shape[1])).astype(np.float32)
        centroids[target] = centroids[source] + nudge
        centroids[source] -= nudge
        sizes[target] = sizes[source] / 2
        sizes[source] -= sizes[target]
    return centroids, len(empty)


def vectors_from_arrow(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """(rows, dim) float32 from a fixed-size list, list or Ray tensor column, copied so it does
    not keep the object-store block alive."""
    array = column.combine_chunks()
    if array.null_count:
        raise UserError(f"vector column {name!r} has {array.null_count} null rows")
    kind = array.type
    if isinstance(kind, pa.ExtensionType) and hasattr(array, "to_numpy"):  # Ray tensor column
        values = array.to_numpy()
        if values.dtype == object or values.ndim != 2:
            raise UserError(f"vector column {name!r} holds tensors of shape other than (d,)")
    elif any(test(kind) for test in (pa.types.is_fixed_size_list, pa.types.is_list,
                                     pa.types.is_large_list)):
        lengths = np.unique(array.value_lengths().to_numpy())
        if len(lengths) != 1 or lengths[0] < 1:
            raise UserError(f"vector column {name!r} has rows of lengths {lengths.tolist()[:5]}; "
                            "all must have the same length")
        values = array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), lengths[0])
    else:
        raise UserError(f"vector column {name!r} has type {kind}; expected a list of floats")
    return np.array(values, dtype=np.float32, order="C", copy=True)


def fixed_exponent(bound: float, terms: int) -> int:
    """Scale 2**e so that `terms` values below `bound`, scaled and truncated to int64, sum below
    2**62. Integer sums are exact in any order, unlike float sums, which is what makes the result
    independent of how rows are split across actors. For 10M rows of |x| < 16 that leaves 34 bits
    below the binary point, finer than float32 resolves such values."""
    return 62 - math.frexp(bound)[1] - math.ceil(math.log2(terms + 1))


def fixed(values: np.ndarray, exponent: int) -> np.ndarray:
    # Scaling by a power of two is exact in float64; only the truncation to int64 rounds.
    return np.multiply(values, math.ldexp(1.0, exponent), dtype=np.float64).astype(np.int64)


def seeded(keys: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64(key ^ splitmix64(seed)): a seed-dependent uniform key per row, by hand because
    pandas' keyed hash would need the ids re-hashed for every seed."""
    seed_mix = splitmix64(np.array([seed % 2**64], np.uint64))
    return splitmix64(keys ^ seed_mix)


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
