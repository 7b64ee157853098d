"""Synthetic vectors for the scale-out k-means benchmark and tests (not part of cola_ray).

`SyntheticBlobs` is a `cola_ray.stages.kmeans_distributed.ChunkSource`: `VectorShards.open` sends
it to the actors, which call `chunk(i)` themselves, so its module must be importable in the Ray
workers: Ray puts the driver's script folder (`python bench/bench_kmeans_scale.py`: import it as
`synthetic`) and current folder (pytest from the repo root: `bench.synthetic`) on their path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cola_ray.stages.kmeans_distributed import CHUNK_ROWS


@dataclass(frozen=True)
class SyntheticBlobs:
    """A Gaussian mixture that actors generate chunk by chunk (a `ChunkSource`), so a benchmark can
    cluster 10M rows that neither the driver nor the object store ever holds. Chunk i depends only
    on (seed, i), so the rows are the same whatever the number of actors; ids are the row numbers
    as strings."""

    num_rows: int
    dim: int = 64
    num_blobs: int = 2048
    blob_spread: float = 4.0  # std of the blob centres; each blob has unit std
    seed: int = 0
    chunk_rows: int = CHUNK_ROWS

    @property
    def num_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_rows)

    def chunk(self, index: int) -> tuple[pa.Array, np.ndarray]:
        """Ids and (rows, dim) float32 vectors of chunk `index`."""
        start = index * self.chunk_rows
        stop = min(self.num_rows, start + self.chunk_rows)
        centres = np.random.default_rng(np.random.SeedSequence(self.seed)).standard_normal(
            (self.num_blobs, self.dim), dtype=np.float32) * np.float32(self.blob_spread)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(index,)))
        vectors = centres[rng.integers(self.num_blobs, size=stop - start)]
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32)
        return pa.array(np.arange(start, stop)).cast(pa.string()), vectors
