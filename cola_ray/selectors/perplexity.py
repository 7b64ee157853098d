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
import os

import numpy as np
import pyarrow as pa

from cola_ray import storage
from cola_ray.selectors.output import calibration_token_ids
from cola_ray.selectors.registry import Pool, SelectorContext, ranked, register_selector

SCORES_FILE = "perplexity-scores.parquet"


class PerplexityScorer:
    """Ray Data callable class: one per actor; (id, text) batches -> (id, perplexity)."""

    def __init__(self, model: str, seq_len: int, device: str, dtype: str, batch_size: int, threads: int = 0):
        import torch

        from cola_ray.models import load_causal_lm, load_tokenizer, pick_device

        if threads:
            torch.set_num_threads(threads)
        self.device = pick_device(device)
        self.model = load_causal_lm(model, self.device, dtype)
        self.tokenizer = load_tokenizer(model)
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.seq_len, self.batch_size = seq_len, batch_size

    def nll(self, token_lists: list[list[int]]) -> list[float]:
        """Mean next-token NLL (nats) of each sequence, right-padded in one batch."""
        import torch

        width = max(len(t) for t in token_lists)
        ids = torch.full((len(token_lists), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(token_lists), width), dtype=torch.long)
        for r, t in enumerate(token_lists):
            ids[r, : len(t)] = torch.tensor(t, dtype=torch.long)
            mask[r, : len(t)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None].to(self.device))[..., 0]
        valid = mask[:, 1:].to(self.device).float()
        return (-(logp * valid).sum(1) / valid.sum(1).clamp(min=1)).cpu().tolist()

    def __call__(self, batch: pa.Table) -> pa.Table:
        tokens = calibration_token_ids(batch.column("text").to_pylist(), self.tokenizer, self.seq_len)
        order = sorted(range(len(tokens)), key=lambda i: (len(tokens[i]), i))  # little padding
        nll = [0.0] * len(tokens)
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo: lo + self.batch_size]
            for i, v in zip(idx, self.nll([tokens[i] for i in idx])):
                nll[i] = v
        return pa.table({"id": batch.column("id"), "nll": pa.array(nll, pa.float64())})


def _actor_resources(device: str, workers: int) -> dict:
    if device == "cuda":
        return {"num_gpus": 1, "num_cpus": 1}
    import ray

    total = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
    return {"num_cpus": 1.0 if total >= workers + 1 else max(0.1, (total - 1) / workers)}


def score_pool(pool: Pool, ctx: SelectorContext) -> pa.Table:
    """(id, nll) of every candidate, sorted by id; computed once per work folder, then cached."""
    import ray
    from ray.data.expressions import col

    from cola_ray.models import pick_device

    cache = storage.join(ctx.work_dir, SCORES_FILE) if ctx.work_dir else None
    key = {"model": ctx.model, "seq_len": ctx.seq_len, "dtype": ctx.dtype, "shards": len(pool.shard_uris)}
    if cache and storage.exists(cache):
        cached = storage.read_parquet([cache])
        meta = (cached.schema.metadata or {}).get(b"cola_ray", b"{}").decode()
        if meta == repr(sorted(key.items())):
            return cached.select(["id", "nll"]).sort_by("id")
    device = pick_device(ctx.device)
    fs, _ = storage.filesystem(pool.shard_uris[0])
    paths = [storage.filesystem(u)[1] for u in pool.shard_uris]
    rows = (ray.data.read_parquet(paths, filesystem=fs).select_columns(["id", "text", "drop"])
            .filter(expr=col("drop") == "").drop_columns(["drop"]))
    threads = 1 if device == "cuda" else max(1, (os.cpu_count() or 1) // ctx.workers)
    scored = rows.map_batches(
        PerplexityScorer, fn_constructor_kwargs=dict(model=ctx.model, seq_len=ctx.seq_len, device=device,
                                                     dtype=ctx.dtype, batch_size=ctx.batch_size, threads=threads),
        compute=ray.data.ActorPoolStrategy(size=ctx.workers), batch_size=64, batch_format="pyarrow",
        **_actor_resources(device, ctx.workers))
    table = pa.concat_tables(ray.get(scored.to_arrow_refs())).sort_by("id")
    if cache:
        storage.write_parquet(cache, table.replace_schema_metadata({"cola_ray": repr(sorted(key.items()))}))
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
