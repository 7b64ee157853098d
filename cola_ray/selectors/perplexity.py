"""Perplexity-based selection: score every candidate with the uncompressed model, pick by score.

The scoring pass is a Ray Data actor pool over the pool's shards (the model loads once per
actor; one GPU per actor on CUDA machines); only (id, perplexity) rows come back to the driver.
Each chunk is tokenized exactly as a calibration sample is (the model's tokenizer with its
default special tokens, cut to seq_len), and scored by its token perplexity, exp(mean NLL).

Scores are cached in the selector's work folder (`perplexity-scores.parquet`, keyed by the
model and seq_len), so the three variants below, and every seed, share one pass.

Variants (the literature uses all three; none is established for calibration):
- `perplexity` (the default, "middle"): the k chunks whose log-perplexity is closest to the
  pool's median. Typical text for the model; avoids both boilerplate (license headers, repeated
  lines: very low perplexity) and noise (tables, mangled markup: very high). Middle-perplexity
  data pruning did best for pre-training in Marion et al. 2023 ("When Less is More").
- `perplexity-low`: the least perplexing chunks (what the model finds most natural).
- `perplexity-high`: the most perplexing chunks (what the model finds hardest).
The seed does not enter: one selection per pool.

Score (`distance`): the chunk's token perplexity under the dense model.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from cola_ray import storage
from cola_ray.cache import Marker
from cola_ray.selectors.registry import Pool, SelectorContext, ranked, register_selector
from cola_ray.stages import runner
from cola_ray.stages.perplexity import PerplexityScorer

SCORES_FILE = "perplexity-scores.parquet"


def score_pool(pool: Pool, ctx: SelectorContext) -> pa.Table:
    """(id, nll) of every candidate, sorted by id; computed once per work folder, then cached."""
    import ray

    from cola_ray.models import pick_device

    cache = storage.join(ctx.work_dir, SCORES_FILE) if ctx.work_dir else None
    key = {"model": ctx.model, "seq_len": ctx.seq_len, "dtype": ctx.dtype, "shards": len(pool.shard_uris)}
    marker = Marker(cache + ".settings.json") if cache else None
    if marker and storage.exists(cache) and marker.matches(key):
        return storage.read_parquet([cache]).select(["id", "nll"]).sort_by("id")
    scorer = PerplexityScorer(model=ctx.model, seq_len=ctx.seq_len, device=pick_device(ctx.device),
                              dtype=ctx.dtype, micro_batch_size=ctx.batch_size)
    scored = runner.run(pool.dataset(["text"]), scorer, workers=ctx.workers)
    table = pa.concat_tables(ray.get(scored.to_arrow_refs())).sort_by("id")
    if cache:
        storage.write_parquet(cache, table)
        marker.write(key)
    return table


def rank_by_perplexity(ids: list[str], nll: np.ndarray, k: int, mode: str) -> list[int]:
    """Indices of the k chosen chunks, in rank order. NLLs are rounded to 1e-5 nats first: the
    forward pass differs by ~1e-7 between batch shapes, which must not reorder near-ties."""
    v = np.round(nll, 5)
    if mode == "low":
        key = v
    elif mode == "high":
        key = -v
    elif mode == "mid":
        key = np.round(np.abs(v - np.median(v)), 5)
    else:
        raise ValueError(mode)
    return sorted(range(len(ids)), key=lambda j: (key[j], ids[j]))[:k]


def _select(pool: Pool, k: int, ctx: SelectorContext, mode: str):
    scores = score_pool(pool, ctx)
    ids = scores.column("id").to_pylist()
    nll = scores.column("nll").to_numpy()
    chosen = rank_by_perplexity(ids, nll, k, mode)
    return ranked([ids[j] for j in chosen], [round(math.exp(float(nll[j])), 4) for j in chosen])


_COMMON = dict(score="token perplexity under the dense model", uses_seed=False, needs_model=True)
register_selector("perplexity", mode="mid", description="perplexity: the chunks nearest the pool's median "
                  "perplexity (typical text for the model)", **_COMMON)(_select)
register_selector("perplexity-low", mode="low", description="perplexity: the least perplexing chunks", **_COMMON)(_select)
register_selector("perplexity-high", mode="high", description="perplexity: the most perplexing chunks", **_COMMON)(_select)
