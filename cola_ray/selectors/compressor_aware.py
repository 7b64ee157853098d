"""Compressor-aware selectors: choose chunks for the statistics compressors consume.

They read the per-chunk layer statistics the activation pass records (stages/layerstats.py:
bucketed channel second moments, a sketched second-moment matrix, outlier channels per slot) and
need no model at selection time. The *target* is what the set's statistics should match: the
candidates themselves (`target: pool`, the source's view under stage-1 quotas) or the run's
embedded probe chunks (with --capabilities: the deployment's text), either all of them weighted
by their tokens (`target: probes`: the capability with the most probe text dominates) or every
capability weighing the same in all (`target: capabilities`; token-weighted within each).

- `moment-match`: kernel herding on the statistics. Each chunk j is a feature vector phi_j (its
  moments and sketch per slot, each (slot, statistic) block divided by the target's norm of that
  block, off-diagonal sketch entries scaled by sqrt(2) so the block's Euclidean norm is the
  matrix's Frobenius norm); the set's statistic is the token-weighted mean of its chunks' (what
  a compressor accumulates), and greedy picks, k times, the chunk whose addition brings that
  mean nearest the target's mean mu:  argmin_j || (s + w_j phi_j) / (W + w_j) - mu ||^2
  (s, W: the weighted sum and the tokens chosen so far). So the objective is the sum over slots
  of the squared relative errors that `cola-ray score` reports as moment_error / hessian_error.
  One matrix-vector product over the pool per pick: O(k n d) time, O(n d) memory (d = slots x
  (128 + 36) floats, 1,312 at the default 4 stat layers). Seed-free; ties go to the smaller id.
  The error is not guaranteed to fall at every pick (herding's error falls as O(1/t) overall);
  the manifest records it after every pick.
- `outlier-coverage`: every outlier channel c of the target (a slot x channel that some target
  chunk flags) has a demand q_c = round(k * p_c), p_c the share of target chunks that flag it (a
  channel flagged by fewer than one target chunk in 2k asks for nothing: at this k it is noise), and
  a weight w_c = max(1, ln(r_c) / ln(tau^2)), r_c the target's mean square of c's channel bucket
  over the slot's median bucket (how strongly it is an outlier; 1 at the flagging threshold
  tau = 6). Objective F(S) = sum_c w_c min(n_c(S), q_c), n_c(S) = chunks of S flagging c: a
  weighted coverage with multiplicities (a sum of concave functions of modular ones: monotone
  submodular), maximised by lazy greedy (marginal gains only shrink), within (1 - 1/e) of the
  optimum. Once no chunk adds coverage, the rest of k is filled in seeded id-hash order. Ties go
  to the seeded id hash, so seeds pick among equally covering chunks. O(n log n + k * rescans).
- `cluster-herding`: COLA's k-means on the activation vectors (one cluster per sample, the same
  clustering as `cola`), but each cluster's representative is chosen by moment-match among its
  `candidates` members nearest the centroid, clusters taken largest first: activation-space
  diversity from the clusters, statistics match from the choice within each.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray.errors import UserError
from cola_ray.hashing import id_keys
from cola_ray.selectors.registry import Pool, Selection, SelectorContext, ranked, register_selector
from cola_ray.stages.layerstats import MOMENT_BUCKETS, OUTLIER_TAU, SKETCH_RANK, SLOT_STRIDE, triu

STAT_READ = ["num_tokens", "stat_moments", "stat_sketch", "stat_outliers"]
TARGETS = ("pool", "probes", "capabilities")


@dataclass(frozen=True)
class TargetParams:
    target: str = "pool"

    def check(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"--selector-params target={self.target!r}: expected one of {', '.join(TARGETS)}")


@dataclass(frozen=True)
class HerdingParams(TargetParams):
    statistic: str = "both"  # moments (what Wanda / AWQ read), sketch (GPTQ / SparseGPT), or both

    def check(self) -> None:
        super().check()
        if self.statistic not in ("moments", "sketch", "both"):
            raise UserError(f"--selector-params statistic={self.statistic!r}: expected one of moments, sketch, both")


@dataclass(frozen=True)
class ClusterHerdingParams(HerdingParams):
    candidates: int = 8
    kmeans_iters: int = 25
    kmeans_restarts: int = 3
    kmeans_points_per_centroid: int = 256
    kmeans_mode: str = "local"

    def check(self) -> None:
        super().check()
        if self.candidates < 1:
            raise UserError(f"--selector-params candidates={self.candidates}: must be at least 1")


# -- reading the statistics ---------------------------------------------------------------


def _matrix(column: pa.ChunkedArray, name: str, folder: str) -> np.ndarray:
    """A list<float32> column of equal-length rows as an (n x d) float32 matrix (no Python loop)."""
    col = column.combine_chunks()
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != lengths.max() or lengths.min() == 0):
        raise UserError(f"pool {folder}: column {name} has rows of different lengths (shards embedded with "
                        f"different --stat-layers); delete {folder} and rerun")
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(lengths), -1) if len(lengths) else np.zeros((0, 0), np.float32)


@dataclass
class Stats:
    ids: list[str]
    tokens: np.ndarray  # float64 [n]
    moments: np.ndarray  # float32 [n, slots * B]
    sketch: np.ndarray  # float32 [n, slots * T]
    outliers: list[np.ndarray]  # per chunk: slot * SLOT_STRIDE + channel
    layout: dict
    share: np.ndarray | None = None  # per chunk, sums to 1: its weight in the outlier shares (None: 1/n)


def read_stats(pool: Pool, selector: str) -> Stats:
    """The pool's per-chunk statistics, rows sorted by id; a one-line error when it has none."""
    layout = pool.stats_layout()
    if not layout or not layout.get("slots"):
        raise UserError(f"--selector {selector}: pool {pool.folder} has no per-chunk layer statistics (embedded by "
                        f"an older cola-ray or with --stat-layers 0); rerun curate with --stat-layers 4 into a new --out")
    t = pool.read(STAT_READ)  # kept rows, sorted by id
    out = t.column("stat_outliers").combine_chunks()
    flat = pc.list_flatten(out).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = np.cumsum(pc.list_value_length(out).fill_null(0).to_numpy(zero_copy_only=False))
    return Stats(t.column("id").to_pylist(), t.column("num_tokens").to_numpy().astype(np.float64),
                 _matrix(t.column("stat_moments"), "stat_moments", pool.folder),
                 _matrix(t.column("stat_sketch"), "stat_sketch", pool.folder),
                 np.split(flat, ends[:-1]) if len(ends) else [], layout)


def target_stats(pool: Pool, ctx: SelectorContext, target: str, selector: str) -> Stats | None:
    """None: the pool is its own target; else the run's probe chunks: all of them token-weighted
    (`probes`: the capability with the most probe text weighs most), or every capability weighing
    the same (`capabilities`)."""
    if target == "pool":
        return None
    if not ctx.probe_pool:
        raise UserError(f"--selector-params target={target}: selector {selector} needs the run's probes "
                        f"(pass --capabilities)")
    probe_pool = Pool.open(ctx.probe_pool)
    probes = read_stats(probe_pool, selector)
    if probes.moments.shape[1] != 0 and probes.layout.get("slots") != pool.stats_layout().get("slots"):
        raise UserError(f"pool {ctx.probe_pool}: probe statistics have another layout than the candidates'")
    if target == "capabilities":
        probes = balanced(probes, probe_pool.read(["source"]).column("source").to_pylist())
    return probes


def balanced(stats: Stats, capabilities: list[str]) -> Stats:
    """The probes re-weighted so that each capability (a probe chunk's source) has the same total
    weight, token-weighted within it, in the mean the herding matches and in the outlier shares."""
    caps = np.asarray(capabilities, dtype=object)
    names = sorted(set(capabilities))
    tokens, share = np.zeros(len(caps)), np.zeros(len(caps))
    for name in names:
        mine = caps == name
        tokens[mine] = stats.tokens[mine] / max(stats.tokens[mine].sum(), 1e-30) / len(names)
        share[mine] = 1.0 / mine.sum() / len(names)
    return replace(stats, tokens=tokens, share=share)


# -- moment-match (herding) ---------------------------------------------------------------


def _sketch_scale(slots: int) -> np.ndarray:
    iu = triu(SKETCH_RANK)
    return np.tile(np.where(iu[0] == iu[1], 1.0, math.sqrt(2.0)), slots).astype(np.float32)


ROWS_PER_BLOCK = 65536  # float64 accumulation a block of rows at a time: no n x d float64 copy


def _weighted_mean(matrix: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = np.zeros(matrix.shape[1], np.float64)
    for lo in range(0, len(matrix), ROWS_PER_BLOCK):
        out += w[lo:lo + ROWS_PER_BLOCK] @ matrix[lo:lo + ROWS_PER_BLOCK].astype(np.float64)
    return out


def herding_features(stats: Stats, target: Stats | None, statistic: str) -> tuple[np.ndarray, np.ndarray]:
    """(phi [n x d] float32, mu [d]): the chosen statistics, each (slot, statistic) block scaled
    by 1 / the target's norm of it; mu the target's token-weighted mean in the same scaling.
    Memory: phi is the one n x d array made here (the inputs are read in place)."""
    slots = len(stats.layout["slots"])
    src = target or stats
    w = src.tokens / src.tokens.sum()
    blocks = []  # (candidates' matrix, target's matrix, per-column scale)
    if statistic in ("moments", "both"):
        blocks.append((stats.moments, src.moments, np.ones(stats.moments.shape[1], np.float64)))
    if statistic in ("sketch", "both"):
        blocks.append((stats.sketch, src.sketch, _sketch_scale(slots).astype(np.float64)))
    d = sum(m.shape[1] for m, _, _ in blocks)
    phi = np.empty((len(stats.ids), d), np.float32)
    mus, off = [], 0
    for mat, tmat, scale in blocks:
        width = mat.shape[1] // slots
        mu = (_weighted_mean(tmat, w) * scale).reshape(slots, width)
        norm = np.maximum(np.linalg.norm(mu, axis=1), 1e-30)  # per slot
        col = (np.repeat(1.0 / norm, width) * scale).astype(np.float32)  # column scale
        for lo in range(0, len(mat), ROWS_PER_BLOCK):
            np.multiply(mat[lo:lo + ROWS_PER_BLOCK], col, out=phi[lo:lo + ROWS_PER_BLOCK, off:off + mat.shape[1]])
        mus.append((mu / norm[:, None]).reshape(-1))
        off += mat.shape[1]
    return phi, np.concatenate(mus)


def herd(phi: np.ndarray, tokens: np.ndarray, mu: np.ndarray, k: int,
         allowed: list[np.ndarray | None] | None = None) -> tuple[list[int], list[float]]:
    """Greedy herding: k picks (or one pick per entry of `allowed`, in its order: an index
    array to pick from, or None for any chunk not yet taken), each
    minimising the squared distance of the set's token-weighted mean feature to mu; returns the
    indices and the error (squared distance) after each pick. Rows must be sorted by id: ties
    go to the first (smallest id)."""
    n = phi.shape[0]
    sq = np.einsum("nd,nd->n", phi, phi).astype(np.float64)
    pm = (phi @ mu.astype(np.float32)).astype(np.float64)
    mm = float(mu @ mu)
    s, weight = np.zeros_like(mu), 0.0
    taken = np.zeros(n, bool)
    chosen, errors = [], []
    steps = allowed if allowed is not None else [None] * min(k, n)
    for cand in steps:
        a = s - weight * mu  # (s - W mu)
        aa, am = float(a @ a), float(a @ mu)
        if cand is None:  # the whole pool: one product over phi in place (no n x d copy per pick)
            idx = slice(None)
            g = (phi @ a.astype(np.float32)).astype(np.float64)
        else:
            idx = cand[~taken[cand]]
            if len(idx) == 0:
                continue
            g = (phi[idx] @ a.astype(np.float32)).astype(np.float64)
        w = tokens[idx]
        num = aa - 2 * w * am + w * w * mm + 2 * w * (g - w * pm[idx]) + w * w * sq[idx]
        err = num / (weight + w) ** 2
        if cand is None:
            if taken.all():
                break
            err[taken] = np.inf
            j = int(np.argmin(err))
        else:
            j = int(idx[int(np.argmin(err))])
        errors.append(float(err[j] if cand is None else np.min(err)))
        taken[j] = True
        s = s + tokens[j] * phi[j].astype(np.float64)
        weight += tokens[j]
        chosen.append(j)
    return chosen, errors


def _herding_inputs(pool: Pool, ctx: SelectorContext, name: str):
    p = ctx.params
    stats = read_stats(pool, name)
    phi, mu = herding_features(stats, target_stats(pool, ctx, p.target, name), p.statistic)
    return stats, phi, mu


@register_selector("moment-match", description="herding: the set's token-weighted layer statistics (channel "
                   "moments, sketched Hessian) matched to the pool's or the probes' (model-free at selection)",
                   score="squared relative error of the set's statistics to the target's after this pick",
                   uses_seed=False, params=HerdingParams)
def moment_match_select(pool: Pool, k: int, ctx: SelectorContext) -> Selection:
    t0 = time.perf_counter()
    stats, phi, mu = _herding_inputs(pool, ctx, "moment-match")
    chosen, errors = herd(phi, stats.tokens, mu, k)
    details = {"target": ctx.params.target, "statistic": ctx.params.statistic, "features": int(phi.shape[1]),
               "error_first": errors[0] if errors else None, "error_final": errors[-1] if errors else None,
               "seconds": round(time.perf_counter() - t0, 3)}
    return Selection(ranked([stats.ids[j] for j in chosen], [round(e, 6) for e in errors]), details)


# -- outlier-coverage (weighted set cover with multiplicities) ----------------------------


def channel_demands(target: Stats, k: int) -> dict[int, tuple[int, float]]:
    """Outlier channel -> (demand q_c, weight w_c) from the target (module docstring)."""
    n = len(target.ids)
    # per chunk, its part of the target: 1 of n chunks (counted exactly), or the balanced shares
    share = target.share if target.share is not None else np.ones(n, np.int64)
    total = 1.0 if target.share is not None else n
    flags: dict[int, float] = {}  # channel -> the target's weight flagging it
    for row, weight in zip(target.outliers, share):
        for c in set(row.tolist()):
            flags[c] = flags.get(c, 0) + weight
    w = target.tokens / target.tokens.sum()
    slots = len(target.layout["slots"])
    mean = _weighted_mean(target.moments, w).reshape(slots, -1) if target.moments.size else None
    widths = [s.get("width") for s in target.layout["slots"]]
    out = {}
    for c, f in sorted(flags.items()):
        q = int(round(k * f / total))
        if q <= 0:
            continue
        slot, channel = divmod(c, SLOT_STRIDE)
        weight = 1.0
        if mean is not None and widths[slot]:
            buckets = min(MOMENT_BUCKETS, widths[slot])
            ratio = mean[slot, channel * buckets // widths[slot]] / max(float(np.median(mean[slot, :buckets])), 1e-30)
            weight = max(1.0, math.log(max(ratio, 1.0)) / math.log(OUTLIER_TAU ** 2))
        out[c] = (q, weight)
    return out


def greedy_cover(chunks: list[np.ndarray], demands: dict[int, tuple[int, float]], k: int,
                 order: np.ndarray) -> tuple[list[int], list[float]]:
    """Lazy greedy on F(S) = sum_c w_c min(n_c(S), q_c); `order[j]` breaks ties (lower first)
    and fills k once no chunk adds coverage. Returns picks and marginal gains."""
    need = {c: q for c, (q, _) in demands.items()}
    weight = {c: w for c, (_, w) in demands.items()}
    sets = [sorted(set(r.tolist()) & need.keys()) for r in chunks]

    def gain(j: int) -> float:
        return round(sum(weight[c] for c in sets[j] if need[c] > 0), 9)

    heap = [(-gain(j), int(order[j]), j) for j in range(len(chunks)) if sets[j]]
    heapq.heapify(heap)
    chosen, gains, taken = [], [], set()
    while heap and len(chosen) < k:
        neg, rank, j = heapq.heappop(heap)
        fresh = gain(j)
        if fresh <= 0:  # covers nothing still demanded: never again (gains only shrink)
            continue
        if not heap or (-fresh, rank) <= heap[0][:2]:
            chosen.append(j)
            gains.append(fresh)
            taken.add(j)
            for c in sets[j]:
                need[c] -= 1
        else:
            heapq.heappush(heap, (-fresh, rank, j))
    for j in np.argsort(order, kind="stable"):
        if len(chosen) >= k:
            break
        if int(j) not in taken:
            chosen.append(int(j))
            gains.append(0.0)
            taken.add(int(j))
    return chosen, gains


@register_selector("outlier-coverage", description="greedy weighted set cover of the target's outlier channels "
                   "(each covered as often as the target flags it, stronger outliers weigh more)",
                   score="marginal gain in weighted outlier-channel coverage when picked (0: filled by seeded order)",
                   params=TargetParams)
def outlier_coverage_select(pool: Pool, k: int, ctx: SelectorContext) -> Selection:
    t0 = time.perf_counter()
    stats = read_stats(pool, "outlier-coverage")
    target = target_stats(pool, ctx, ctx.params.target, "outlier-coverage") or stats
    demands = channel_demands(target, k)
    order = np.argsort(np.argsort(id_keys(stats.ids, ctx.seed, "outlier-coverage"), kind="stable"), kind="stable")
    chosen, gains = greedy_cover(stats.outliers, demands, k, order)
    covering = sum(1 for g in gains if g > 0)
    details = {"target": ctx.params.target, "channels": len(demands), "demand": sum(q for q, _ in demands.values()),
               "covering_picks": covering, "seconds": round(time.perf_counter() - t0, 3)}
    return Selection(ranked([stats.ids[j] for j in chosen], [round(g, 6) for g in gains]), details)


# -- cluster-herding (COLA clusters, representatives by statistics) -----------------------


@register_selector("cluster-herding", description="COLA's activation clusters, each represented by the member "
                   "(among the nearest to its centroid) that best matches the target's layer statistics",
                   score="squared relative error of the set's statistics to the target's after this pick",
                   params=ClusterHerdingParams)
def cluster_herding_select(pool: Pool, k: int, ctx: SelectorContext) -> Selection:
    from cola_ray.selectors.cola import KMeansParams, cluster_members

    t0 = time.perf_counter()
    p: ClusterHerdingParams = ctx.params
    km = KMeansParams(p.kmeans_iters, p.kmeans_restarts, p.kmeans_points_per_centroid, p.kmeans_mode)
    assigned, details = cluster_members(pool, k, ctx, km)  # id, cluster, distance
    stats, phi, mu = _herding_inputs(pool, ctx, "cluster-herding")
    row = {ident: i for i, ident in enumerate(stats.ids)}
    a = assigned.sort_by([("cluster", "ascending"), ("distance", "ascending"), ("id", "ascending")])
    clusters = a.column("cluster").to_numpy()
    members = [row[i] for i in a.column("id").to_pylist()]
    groups: dict[int, list[int]] = {}
    for c, j in zip(clusters.tolist(), members):
        groups.setdefault(c, []).append(j)
    order = sorted(groups, key=lambda c: (-len(groups[c]), c))  # largest clusters pick first
    allowed = [np.asarray(sorted(groups[c][:p.candidates]), np.int64) for c in order]
    # an empty k-means cluster leaves a pick to the whole pool, so the set still has k chunks
    chosen, errors = herd(phi, stats.tokens, mu, k, allowed=allowed + [None] * (k - len(allowed)))
    of = dict(zip(members, clusters.tolist()))
    table = pa.table({"id": pa.array([stats.ids[j] for j in chosen], pa.string()),
                      "cluster": pa.array([of[j] for j in chosen], pa.int64()),
                      "distance": pa.array([round(e, 6) for e in errors], pa.float64()),
                      "cluster_size": pa.array([len(groups[of[j]]) for j in chosen], pa.int64())})
    details = {**details, "target": p.target, "statistic": p.statistic, "candidates": p.candidates,
               "error_final": errors[-1] if errors else None, "seconds": round(time.perf_counter() - t0, 3)}
    return Selection(table, details)
