"""Random baselines: what every compression tool does today, made order-independent.

`random`: the k candidates with the smallest hash(seed, id): a uniform sample without
replacement that depends only on the set of ids, never on file order, sharding or workers.

`random-stratified`: the same within each source, with per-source quotas proportional to the
source's share of the pool (largest-remainder rounding). It removes the sampling noise in the
domain mix that plain random sampling has (the first measurement found COLA's mean gain came
mostly from a shift in domain mix), so a COLA gain over it is a gain from *which* chunks, not
from *how many of each source*.

Score (`distance`): the chunk's uniform random key in [0, 1).
"""

from __future__ import annotations

import numpy as np

from cola_ray.hashing import uniform
from cola_ray.selectors.registry import Pool, SelectorContext, ranked, register_selector

def uniform_keys(ids: list[str], seed: int, salt: str = "random") -> np.ndarray:
    """One uniform [0, 1) key per id from the seeded id-hash: the sample depends on (seed, id) only."""
    return uniform(ids, seed, salt)


def _smallest(ids: list[str], keys: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(ids)), key=lambda j: (keys[j], ids[j]))[:k]


@register_selector("random", description="uniform sample: the k smallest hash(seed, id)",
                   score="uniform random key in [0, 1) (smallest first)")
def random_sample(pool: Pool, k: int, ctx: SelectorContext):
    ids = pool.read().column("id").to_pylist()
    keys = uniform_keys(ids, ctx.seed)
    chosen = _smallest(ids, keys, k)
    return ranked([ids[j] for j in chosen], [round(float(keys[j]), 6) for j in chosen])


def proportional_quotas(counts: dict[str, int], k: int) -> dict[str, int]:
    """Split k over sources in proportion to their counts: floors, then the largest remainders
    (ties by source name), never more than a source has."""
    total = sum(counts.values())
    if total == 0:
        return {s: 0 for s in counts}
    k = min(k, total)
    exact = {s: k * n / total for s, n in counts.items()}
    quota = {s: min(counts[s], int(exact[s])) for s in counts}
    order = sorted(counts, key=lambda s: (-(exact[s] - int(exact[s])), s))
    while sum(quota.values()) < k:
        for s in order:
            if sum(quota.values()) < k and quota[s] < counts[s]:
                quota[s] += 1
    return quota


@register_selector("random-stratified", description="uniform sample within each source, quotas "
                   "proportional to the candidate mix", score="uniform random key in [0, 1) within its source")
def stratified_sample(pool: Pool, k: int, ctx: SelectorContext):
    table = pool.read(["source"])
    ids, sources = table.column("id").to_pylist(), table.column("source").to_pylist()
    keys = uniform_keys(ids, ctx.seed, salt="stratified")
    by_source: dict[str, list[int]] = {}
    for j, s in enumerate(sources):
        by_source.setdefault(s, []).append(j)
    quotas = proportional_quotas({s: len(v) for s, v in by_source.items()}, k)
    chosen = [j for s in sorted(by_source) for j in sorted(by_source[s], key=lambda j: (keys[j], ids[j]))[: quotas[s]]]
    chosen.sort(key=lambda j: (keys[j], ids[j]))  # rank: interleaved by key, not grouped by source
    return ranked([ids[j] for j in chosen], [round(float(keys[j]), 6) for j in chosen])
