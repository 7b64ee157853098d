r"""COLA stage 1: how well each candidate source covers each capability, and sample quotas.

The paper asks for sources S maximising sum_c w_c * coverage(S, c) but leaves coverage
undefined; the authors' code mixes an embedding similarity (weight alpha = 0.6) with a
token-unigram similarity. We keep that mix and define both parts precisely, in the model's
own (projected) activation space rather than a separate sentence encoder.

Coverage of capability c by source s::

    coverage(s, c) = alpha * act(s, c) + (1 - alpha) * tok(s, c)          alpha = 0.6

    act(s, c) = clip( 1/m_c * sum_j  topk_mean_i( cos(x_i - mu, p_j - mu) ),  0, 1 )

        x_i: the source's pooled projected activation vectors (n_s x d); p_j: the capability's
        probe vectors (m_c x d); topk_mean_i: mean of the k = min(top_k, n_s) largest values
        over the source's vectors (top_k = 5): "how close the source's vectors come to each
        probe", robust to a single stray vector, unlike the plain max. mu is the common offset,
        the mean of the per-set means of all sources and capabilities (center=True): LLM
        hidden states share a large common direction that makes every raw cosine ~0.9, so we
        measure closeness relative to the pool; a source no closer than the pool average
        scores 0. (With only one source and one capability, centering makes them opposite:
        pass center=False there.) Compare sources on samples of similar size: a larger
        sample can only come closer to a probe.

    tok(s, c) = clip( 1 - D(s, c) / log|V|,  0, 1 )
    D(s, c)   = ( KL(q_s || q_c) + KL(q_c || q_s) ) / 2
    q         = (1 - eps) * counts / sum(counts) + eps / |V|               eps = 1e-3

        the symmetric KL of the unigram distributions, smoothed by mixing with the uniform
        distribution over the vocabulary V (dense arrays: their length; token -> count
        mappings: the union of their keys, or vocab_size if larger). log|V| is the entropy of
        the uniform distribution; with eps = 1e-3 disjoint supports score ~0.

Quotas (:func:`allocate_quotas`): every capability gets its weighted share of the samples,
w_c / sum(w), and splits it among the sources that cover it above the floor
(coverage(s, c) > min_coverage) by a soft argmax of their coverage::

    share(s, c) = exp((coverage(s, c) - best_c) / T) / sum_s' exp((coverage(s', c) - best_c) / T)
    quota(s)   ~ num_samples * sum_c w_c / sum(w) * share(s, c)           T = 0.05

Splitting per capability (rather than ranking sources by their weighted total) keeps the
capability mix fixed however many sources resemble one capability: five web sources must not
turn a general deployment into a prose deployment. The soft argmax follows the paper's
objective (a set of sources covers c as well as its best member) without being brittle: a
source 0.05 behind the best gets e^-1 of its share, a near-tie splits evenly; T -> 0 is
winner-takes-all, a large T splits evenly. A plain proportional split is too flat: a web crawl
with some code covers "code" nearly as well as a code corpus and would outweigh it. Sources
above the floor for no weighted capability get nothing and are reported with the reason.
Quotas are capped at each source's candidates (the excess goes to the others in the same
proportions) and rounded by largest remainder, ties broken by source name, so they always sum
to exactly num_samples.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from cola_ray.errors import UserError

TokenCounts = np.ndarray | Mapping[Hashable, float]


@dataclass(frozen=True)
class Profile:
    """What stage 1 sees of a source (a sample of it) or of a capability (its probe set)."""

    vectors: np.ndarray
    """Pooled projected activation vectors, one row per text (n x d)."""
    token_counts: TokenCounts | None = None
    """Token-unigram counts: a dense vocab-sized array or a token -> count mapping."""


class Coverage(NamedTuple):
    """coverage(s, c) for every source (rows) and capability (columns)."""

    matrix: np.ndarray
    sources: list[str]
    capabilities: list[str]


def activation_similarity(source_vectors: np.ndarray, probe_vectors: np.ndarray,
                          top_k: int = 5, center: np.ndarray | None = None) -> float:
    """act(s, c) of the module docstring for one source and one capability."""
    offset = 0.0 if center is None else center
    return _top_k_closeness(_unit(np.asarray(source_vectors, np.float64) - offset),
                            _unit(np.asarray(probe_vectors, np.float64) - offset), top_k)


def _top_k_closeness(x: np.ndarray, p: np.ndarray, top_k: int) -> float:
    """Mean over unit probes p of the mean of their top_k cosines to unit vectors x, in [0, 1]."""
    cos = p @ x.T  # (m_c, n_s)
    k = min(top_k, cos.shape[1])
    top = np.partition(cos, cos.shape[1] - k, axis=1)[:, -k:]
    return float(np.clip(top.mean(), 0.0, 1.0))


def token_similarity(source_counts: np.ndarray, probe_counts: np.ndarray,
                     smoothing: float = 1e-3) -> np.ndarray:
    """tok(s, c) of the module docstring for dense count rows: (S x V), (C x V) -> (S x C)."""
    qs, qc = (_smoothed(np.atleast_2d(c), smoothing) for c in (source_counts, probe_counts))
    log_s, log_c = np.log(qs), np.log(qc)
    kl_sc = (qs * log_s).sum(1)[:, None] - qs @ log_c.T
    kl_cs = (qc * log_c).sum(1)[None, :] - log_s @ qc.T
    return np.clip(1.0 - (kl_sc + kl_cs) / 2 / np.log(qs.shape[1]), 0.0, 1.0)


def coverage_matrix(sources: Mapping[str, Profile], capabilities: Mapping[str, Profile],
                    alpha: float = 0.6, top_k: int = 5, center: bool = True,
                    smoothing: float = 1e-3, vocab_size: int | None = None) -> Coverage:
    """coverage(s, c) = alpha * act(s, c) + (1 - alpha) * tok(s, c) (module docstring).

    Sources and capabilities keep their mapping order. Token counts may be omitted only when
    alpha == 1.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"coverage alpha must be in [0, 1], got {alpha}")
    if not sources or not capabilities:
        raise UserError("coverage needs at least one source and one capability")
    if top_k < 1 or not 0.0 < smoothing <= 1.0:
        raise UserError(f"coverage top_k must be >= 1 and smoothing in (0, 1], "
                        f"got {top_k} and {smoothing}")
    profiles = {**{("source", s): p for s, p in sources.items()},
                **{("capability", c): p for c, p in capabilities.items()}}
    vectors = _checked_vectors(profiles)
    mu = np.mean([v.mean(axis=0) for v in vectors.values()], axis=0) if center else 0.0
    unit = {key: _unit(v - mu) for key, v in vectors.items()}
    act = np.array([[_top_k_closeness(unit["source", s], unit["capability", c], top_k)
                     for c in capabilities] for s in sources])
    matrix = act
    if alpha < 1.0:
        counts = _dense_counts(profiles, vocab_size)
        tok = token_similarity(np.stack([counts["source", s] for s in sources]),
                               np.stack([counts["capability", c] for c in capabilities]),
                               smoothing)
        matrix = alpha * act + (1.0 - alpha) * tok
    return Coverage(matrix, list(sources), list(capabilities))


def capability_weights(capabilities: Sequence[str], deployment: str = "general",
                       target: str | Sequence[str] | None = None,
                       overrides: Mapping[str, float] | None = None,
                       target_weight: float = 1.0, other_weight: float = 0.2) -> dict[str, float]:
    """w_c per capability: equal for a general deployment; for a targeted one the target(s)
    get ``target_weight`` and the rest ``other_weight`` (the paper's 1.0 vs 0.2). ``overrides``
    then set individual weights."""
    caps = list(capabilities)
    if deployment == "general":
        if target is not None:
            raise UserError("target is only used with deployment='targeted'")
        weights = dict.fromkeys(caps, 1.0)
    elif deployment == "targeted":
        targets = [target] if isinstance(target, str) else list(target or [])
        if not targets:
            raise UserError("deployment='targeted' needs a target capability")
        _check_known(targets, caps, "target")
        weights = {c: target_weight if c in targets else other_weight for c in caps}
    else:
        raise UserError(f"unknown deployment {deployment!r} (use 'general' or 'targeted')")
    _check_known(list(overrides or {}), caps, "capability in weight overrides")
    weights.update(overrides or {})
    negative = [c for c, w in weights.items() if not w >= 0]
    if negative:
        raise UserError(f"weight of capability {negative[0]!r} must be >= 0, "
                        f"got {weights[negative[0]]}")
    if not any(weights.values()):
        raise UserError("all capability weights are 0")
    return weights


@dataclass
class QuotaPlan:
    """How many calibration samples each source contributes, and why some contribute none."""

    quotas: dict[str, int]
    """Every source -> its number of samples (0 for excluded ones); sums to num_samples."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Source -> reason it gets nothing."""
    uncovered: list[str] = field(default_factory=list)
    """Weighted capabilities that no source covers above min_coverage."""


def allocate_quotas(coverage: Coverage, weights: Mapping[str, float], num_samples: int,
                    available: Mapping[str, int], min_coverage: float = 0.1,
                    temperature: float = 0.05) -> QuotaPlan:
    """Split ``num_samples`` among sources (module docstring: per-capability soft argmax above
    a floor, capacity cap, largest remainder). ``available``: candidates per source."""
    matrix, sources, caps = coverage
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1, got {num_samples}")
    if temperature <= 0:
        raise UserError(f"quota temperature must be > 0, got {temperature}")
    _check_known(list(weights), caps, "capability in weights")
    _check_known(list(available), sources, "source in available")
    for given, names, what in ((weights, caps, "weight"), (available, sources, "candidate count")):
        missing = [n for n in names if n not in given]
        if missing:
            raise UserError(f"no {what} given for {missing[0]!r}")
    if sum(available.values()) < num_samples:
        raise UserError(f"only {sum(available.values())} candidates in all sources for "
                        f"num_samples={num_samples}")
    order = sorted(range(len(sources)), key=lambda i: sources[i])  # name order: deterministic
    names = [sources[i] for i in order]
    cov = np.asarray(matrix, dtype=np.float64)[order]
    cap_size = np.array([available[s] for s in names], dtype=np.float64)
    eligible = (cov > min_coverage) & (cap_size[:, None] > 0)
    w = np.array([weights[c] for c in caps], dtype=np.float64)
    covered = eligible.any(axis=0)
    uncovered = [c for c, wc, ok in zip(caps, w, covered) if wc > 0 and not ok]
    if not np.any(w[covered] > 0):
        raise UserError(f"no source reaches min_coverage={min_coverage} for any weighted "
                        f"capability ({', '.join(c for c, wc in zip(caps, w) if wc > 0)})")
    w = np.where(covered, w, 0.0) / w[covered].sum()
    best = np.where(eligible, cov, -np.inf).max(axis=0)
    soft = np.exp(np.where(eligible, cov - best, -np.inf) / temperature)
    demand = (soft / np.where(covered, soft.sum(axis=0), 1.0)) @ w
    useful = (eligible & (w > 0)).any(axis=1)
    excluded = {s: _exclusion_reason(row, caps, cap, min_coverage)
                for s, row, cap, ok in zip(names, cov, cap_size, useful) if not ok}
    if cap_size[demand > 0].sum() < num_samples:
        raise UserError(f"sources above min_coverage={min_coverage} have only "
                        f"{int(cap_size[demand > 0].sum())} candidates for "
                        f"num_samples={num_samples}; lower min_coverage or num_samples")
    shares = _water_fill(demand, cap_size, num_samples)
    quotas = _largest_remainder(shares, cap_size, num_samples)
    return QuotaPlan(quotas={s: quotas[names.index(s)] for s in sources},
                     excluded=excluded, uncovered=uncovered)


def usefulness(matrix: np.ndarray, capabilities: Sequence[str],
               weights: Mapping[str, float]) -> np.ndarray:
    """sum_c w_c * coverage(s, c) / sum_c w_c per source: the paper's objective, per source."""
    w = np.array([weights.get(c, 0.0) for c in capabilities], dtype=np.float64)
    return np.asarray(matrix) @ w / max(w.sum(), 1e-12)


def format_coverage_table(matrix: np.ndarray, sources: Sequence[str],
                          capabilities: Sequence[str], weights: Mapping[str, float],
                          quotas: Mapping[str, int],
                          excluded: Mapping[str, str] | None = None) -> str:
    """A plain-text table: coverage per capability (weights in the header), the weighted
    usefulness, the quota; then one line per excluded source."""
    head = ["source"] + [f"{c} (w={weights.get(c, 0.0):g})" for c in capabilities] + [
        "weighted", "quota"]
    use = usefulness(matrix, capabilities, weights)
    rows = [[s] + [f"{v:.3f}" for v in matrix[i]] + [f"{use[i]:.3f}", str(quotas.get(s, 0))]
            for i, s in enumerate(sources)]
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
    lines = ["  ".join(v.ljust(w) if j == 0 else v.rjust(w)
                       for j, (v, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"excluded {s}: {why}" for s, why in (excluded or {}).items()]
    return "\n".join(lines)


# -- internals ----------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _smoothed(counts: np.ndarray, eps: float) -> np.ndarray:
    p = counts / counts.sum(axis=1, keepdims=True)
    return (1.0 - eps) * p + eps / counts.shape[1]


def _checked_vectors(profiles: Mapping[tuple[str, str], Profile]) -> dict:
    out, dims = {}, {}
    for (kind, name), prof in profiles.items():
        v = np.asarray(prof.vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] == 0 or not np.all(np.isfinite(v)):
            raise UserError(f"{kind} {name!r}: vectors must be a non-empty finite (n x d) "
                            f"array, got shape {v.shape}")
        dims[kind, name] = v.shape[1]
        out[kind, name] = v
    if len(set(dims.values())) > 1:
        first = next(iter(dims))
        odd = next(k for k, d in dims.items() if d != dims[first])
        raise UserError(f"{odd[0]} {odd[1]!r}: vectors have dimension {dims[odd]}, "
                        f"{first[0]} {first[1]!r} has {dims[first]}")
    return out


def _dense_counts(profiles: Mapping[tuple[str, str], Profile],
                  vocab_size: int | None) -> dict:
    """Every profile's token counts as dense rows over one shared vocabulary.

    Arrays are indexed by token id; mappings keyed by integers are token ids too (rows are
    zero-padded to the largest id, array length or vocab_size); mappings keyed by anything
    else (token strings) are indexed over the union of their keys and cannot mix with arrays.
    """
    counts = {}
    for (kind, name), prof in profiles.items():
        if prof.token_counts is None:
            raise UserError(f"{kind} {name!r}: token_counts missing (needed unless alpha == 1)")
        tc = prof.token_counts
        counts[kind, name] = tc if isinstance(tc, Mapping) else np.asarray(tc, np.float64).ravel()
    maps = [tc for tc in counts.values() if isinstance(tc, Mapping)]
    dense_sizes = {len(tc) for tc in counts.values() if not isinstance(tc, Mapping)}
    if len(dense_sizes) > 1:
        raise UserError(f"token_counts arrays have different lengths {sorted(dense_sizes)}: "
                        "use one tokenizer for all sources and capabilities")
    keys = set().union(*maps)
    if all(isinstance(t, (int, np.integer)) and t >= 0 for t in keys):
        position = {t: int(t) for t in keys}
        size = max([vocab_size or 0, *dense_sizes, *(p + 1 for p in position.values())])
    elif not dense_sizes:
        position = {t: i for i, t in enumerate(sorted(keys, key=repr))}
        size = max(len(position), vocab_size or 0)
    else:
        raise UserError("token_counts mix arrays with mappings keyed by non-integer tokens")
    out = {}
    for (kind, name), tc in counts.items():
        row = np.zeros(size)
        if isinstance(tc, Mapping):
            row[[position[t] for t in tc]] = list(tc.values())
        else:
            row[:len(tc)] = tc
        if np.any(row < 0) or not np.isfinite(row).all() or row.sum() <= 0:
            raise UserError(f"{kind} {name!r}: token_counts must be non-negative with a "
                            f"positive total, got a total of {row.sum():g}")
        out[kind, name] = row
    return out


def _check_known(names: Sequence[str], known: Sequence[str], what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown {what}: {unknown[0]!r} (known: {', '.join(map(str, known))})")


def _exclusion_reason(row: np.ndarray, caps: Sequence[str], candidates: float,
                      min_coverage: float) -> str:
    if candidates <= 0:
        return "no candidates"
    best = int(np.argmax(row))
    return (f"covers no weighted capability above min_coverage={min_coverage} "
            f"(best: {caps[best]} {row[best]:.3f})")


def _water_fill(demand: np.ndarray, capacity: np.ndarray, total: int) -> np.ndarray:
    """Fractional shares proportional to demand, none above capacity, summing to total."""
    shares = np.zeros_like(demand)
    free = demand > 0
    remaining = float(total)
    while free.any():
        alloc = remaining * demand / demand[free].sum()
        over = free & (alloc > capacity)
        if not over.any():
            shares[free] = alloc[free]
            break
        shares[over] = capacity[over]
        remaining -= capacity[over].sum()
        free &= ~over
    return shares


def _largest_remainder(shares: np.ndarray, capacity: np.ndarray, total: int) -> list[int]:
    """Integer quotas summing to total: floors, then one more for the largest remainders
    (ties: name order, which is the array order), never above capacity, never to a source
    whose share is 0."""
    shares = np.round(shares, 9)  # float noise must not decide a remainder
    base = np.minimum(np.floor(shares), capacity).astype(int)
    frac = shares - base
    order = sorted(np.flatnonzero(shares > 0), key=lambda i: (-frac[i], i))
    left = total - int(base.sum())
    while left > 0:  # one pass, unless float noise left more units than fractional shares
        before = left
        for i in order:
            if left > 0 and base[i] < capacity[i]:
                base[i] += 1
                left -= 1
        if left == before:
            raise AssertionError("no capacity left for rounding; checked by allocate_quotas")
    return base.tolist()
