"""The in-memory near-duplicate reference the tests check the Ray path against.

:class:`NearDedup` finds candidates with datasketch's own :class:`MinHashLSH` (not our band
keys) over the package's MinHash signatures, then resolves groups like the package does
(:func:`~cola_ray.stages.neardup.drop_from_pairs`: the smallest id of a group is kept), so it
is an independent oracle for the bucketing steps; :func:`explode_buckets` and
:func:`near_duplicate_pairs` are the all-pairs, in-memory form of the package's band rows and
pair verification. Small inputs only; not part of cola_ray.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from cola_ray.errors import UserError
from cola_ray.stages.neardup import (_SCHEME, _check_threshold, _plain_ids, drop_from_pairs, lsh_band_keys,
                                     minhash_signatures)


def explode_buckets(ids: Sequence[Any], signatures: np.ndarray, bands: int, rows: int
                    ) -> dict[str, np.ndarray]:
    """A batch with one row per (id, band): columns ``bucket``, ``id``, ``signature``, ready
    for a Ray Data groupby on ``bucket``."""
    keys = lsh_band_keys(signatures, bands, rows)
    return {"bucket": keys.ravel(),
            "id": np.repeat(np.asarray(ids), bands),
            "signature": np.repeat(np.asarray(signatures, dtype=np.uint64), bands, axis=0)}


def near_duplicate_pairs(ids: Sequence[Hashable], signatures: np.ndarray, threshold: float,
                         block: int = 64) -> list[tuple[Any, Any]]:
    """All pairs ``(smaller id, larger id)`` whose estimated Jaccard is >= ``threshold``.

    Compares every pair of the given rows (meant for one LSH bucket), ``block`` rows at a time
    so that memory stays at ``block x n x num_perm`` booleans.
    """
    _check_threshold(threshold)
    ids = _plain_ids(ids)
    sig = np.asarray(signatures, dtype=np.uint64)
    if sig.ndim != 2 or len(ids) != sig.shape[0]:
        raise UserError(f"{len(ids)} ids but signatures of shape {sig.shape}")
    pairs = set()
    for start in range(0, len(ids), block):
        sim = (sig[start:start + block, None, :] == sig[None, :, :]).mean(axis=2)
        rows, cols = np.nonzero(sim >= threshold)
        for i, j in zip(rows + start, cols):
            if i < j and ids[i] != ids[j]:
                pairs.add((min(ids[i], ids[j]), max(ids[i], ids[j])))
    return sorted(pairs)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Share of equal MinHash values: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def resolve_near_duplicates(ids: Sequence[Hashable], signatures: np.ndarray,
                            threshold: float) -> set[Any]:
    """Ids to drop among these rows: each group of near-duplicates keeps its smallest id."""
    return drop_from_pairs(near_duplicate_pairs(ids, signatures, threshold))


@dataclass
class DedupResult:
    """What :meth:`NearDedup.dedup` kept (input order) and dropped."""

    kept: list[tuple[Any, str]]
    dropped: set[Any] = field(default_factory=set)

    @property
    def num_dropped(self) -> int:
        return len(self.dropped)


class NearDedup:
    """In-memory near-duplicate removal over ``(id, text)`` pairs, for small inputs.

    Candidates come from datasketch's MinHashLSH; each candidate pair is then checked against
    ``threshold`` and groups are resolved as in :func:`drop_from_pairs` (smallest id kept).
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5,
                 seed: int = 1) -> None:
        _check_threshold(threshold)
        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed

    def duplicates(self, records: Sequence[tuple[Hashable, str]]) -> set[Any]:
        """Ids of the records to drop."""
        ids = _plain_ids([r[0] for r in records])
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise UserError(f"near-dup: id {repeated[0]!r} occurs more than once")
        sigs = minhash_signatures((r[1] for r in records), self.num_perm, self.ngram, self.seed)
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        sketches = [LeanMinHash(seed=self.seed, hashvalues=s, scheme=_SCHEME) for s in sigs]
        for i, sketch in enumerate(sketches):
            lsh.insert(i, sketch, check_duplication=False)
        pairs = []
        for i, sketch in enumerate(sketches):
            for j in lsh.query(sketch):
                if i < j and estimated_jaccard(sigs[i], sigs[j]) >= self.threshold:
                    pairs.append((min(ids[i], ids[j]), max(ids[i], ids[j])))
        return drop_from_pairs(pairs)

    def dedup(self, records: Sequence[tuple[Hashable, str]]) -> DedupResult:
        """The records that survive, in input order, and the dropped ids."""
        records = list(records)
        dropped = self.duplicates(records)
        return DedupResult(kept=[r for r in records if r[0] not in dropped], dropped=dropped)
