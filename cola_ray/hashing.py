"""The one seeded id-hash: a uniform 64-bit key per (seed, id), the basis of every sample
cola-ray draws (k-means' training sample, the coverage samples, the random selectors). A key
depends on the seed and the id only, never on file order, sharding or the number of workers."""

from __future__ import annotations

import hashlib

import numpy as np

_SCALE = float(2**64)


def id_keys(ids: list[str], seed: int, salt: str | None = None) -> np.ndarray:
    """uint64 keys of blake2b-64 over `seed:id` (or `salt:seed:id`: independent draws per salt)."""
    prefix = f"{seed}:" if salt is None else f"{salt}:{seed}:"
    return np.array([int.from_bytes(hashlib.blake2b(f"{prefix}{i}".encode(), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)


def uniform(ids: list[str], seed: int, salt: str | None = None) -> np.ndarray:
    """One uniform [0, 1) float per id."""
    return id_keys(ids, seed, salt).astype(np.float64) / _SCALE


def in_sample(ids: list[str], fraction: float, seed: int, salt: str | None = None) -> np.ndarray:
    """A seeded uniform sample of about `fraction` of the ids (a hash threshold)."""
    if fraction >= 1.0:
        return np.ones(len(ids), dtype=bool)
    return id_keys(ids, seed, salt) < np.uint64(min(int(fraction * 2**64), 2**64 - 1))
