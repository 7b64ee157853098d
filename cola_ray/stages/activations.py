"""Stage 3: chunks -> small projected activation vectors, inside Ray actors.

For each chunk and each chosen decoder layer: the mean of the layer's output hidden states over
the chunk's own tokens (never padding, never the BOS position), L2-normalised; the per-layer
vectors are concatenated and projected to `proj_dim` with a seeded Gaussian matrix that every
actor rebuilds identically. Only `proj_dim` floats per chunk leave the actor.

The forward pass stops after the deepest chosen layer (a hook raises), so neither the later
layers nor the LM head are computed. Each Ray batch becomes one shard file written atomically
by the actor; a shard is the unit a rerun skips (resume after a crash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from cola_ray.pool import RAW_LEDGER_COLUMNS, STAT_COLUMNS, copies, make_shard, shard_name, write_shard
from cola_ray.stages.base import ModelStage
from cola_ray.stages.experts import ExpertCounter
from cola_ray.stages.layerstats import InputStats, stat_layer_ids


def projection_matrix(in_dim: int, proj_dim: int, seed: int) -> np.ndarray:
    """a' = (1/sqrt(proj_dim)) R a with R ~ N(0, 1): a Johnson-Lindenstrauss projection that keeps
    distances in expectation. numpy's PCG64 makes it identical on every actor and machine."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, in_dim, proj_dim]))
    return (rng.standard_normal((in_dim, proj_dim)) / math.sqrt(proj_dim)).astype(np.float32)


class _StopForward(Exception):
    """Raised by the hook on the deepest chosen layer: nothing after it is computed."""


class LayerPooler:
    """Runs a causal LM up to its deepest chosen layer (or `stop_after`, when deeper: the last
    MoE layer whose routing is counted) and mean-pools each chosen layer's output."""

    def __init__(self, model, layers: list[int], stop_after: int | None = None):
        from cola_ray.models import find_decoder_layers

        self.model, self.layers = model, layers
        blocks = find_decoder_layers(model)
        stop = max(layers[-1], stop_after if stop_after is not None else -1)
        self._captured: dict[int, object] = {}
        self._handles = [blocks[i].register_forward_hook(self._hook(i, i == stop)) for i in sorted({*layers, stop})]

    def _hook(self, index: int, last: bool):
        pooled = index in self.layers

        def hook(_module, _inputs, output):
            if pooled:
                self._captured[index] = output[0] if isinstance(output, tuple) else output
            if last:
                raise _StopForward

        return hook

    def pooled(self, input_ids, attention_mask, pool_mask, stats: InputStats | None = None, experts=None):
        """[batch, n_layers, hidden] float32 means over pool_mask positions, L2-normalised
        (`stats` / `experts`, when given, capture the layer-input statistics / the routed
        tokens per expert in the same pass)."""
        import torch

        if stats is not None:
            stats.start(pool_mask)
        if experts is not None:
            experts.start(attention_mask)

        # Explicit positions from the mask: with left padding, real tokens still start at 0,
        # so absolute-position models (GPT-2) see the same inputs as unpadded.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        self._captured.clear()
        with torch.inference_mode():
            try:
                self.model(input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=position_ids, use_cache=False)
            except _StopForward:
                pass
        mask = pool_mask.unsqueeze(-1)
        counts = pool_mask.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)
        out = []
        for i in self.layers:
            h = self._captured[i].to(torch.float32)
            # masked_fill, not multiply: padded positions may hold NaN (fully masked attention rows)
            mean = h.masked_fill(~mask, 0.0).sum(1) / counts
            out.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.stack(out, 1)


def pad_batch(token_lists: list[list[int]], pad_id: int, bos_id: int | None, side: str = "right"):
    """Tensors (input_ids, attention_mask, pool_mask); BOS is fed to the model but not pooled:
    its hidden state is an 'attention sink' of huge norm, the same for every chunk."""
    import torch

    # a chunk that already starts with BOS (a chat template that writes it) gets no second one
    seqs = [([bos_id] if bos_id is not None and list(t[:1]) != [bos_id] else []) + list(t) for t in token_lists]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.bool)
    pool = torch.zeros((len(seqs), width), dtype=torch.bool)
    skip = 1 if bos_id is not None else 0
    for r, s in enumerate(seqs):
        lo = 0 if side == "right" else width - len(s)
        ids[r, lo: lo + len(s)] = torch.tensor(s, dtype=torch.long)
        attn[r, lo: lo + len(s)] = True
        pool[r, lo + skip: lo + len(s)] = True
    return ids, attn, pool


def adds_bos(tokenizer) -> int | None:
    """The BOS id if the tokenizer prepends one by default (Llama-style), else None."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    return bos if tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos] else None


@dataclass(kw_only=True)
class ActivationExtractor(ModelStage):
    """Chunk rows (kept and dropped) -> one shard per Ray batch; returns the shard's ledger rows.

    Embeds the kept chunks in micro-batches of similar length, writes the shard (the pool's
    schema, pool.make_shard) to `shard_dir` and returns only its small raw ledger rows (and the
    shard's name) to the driver. A chunk id repeated within the batch (a document the corpus holds
    twice) is embedded once; the pool resolves repeats across shards (pool.resolve).
    """

    reads: ClassVar[tuple[str, ...]] = ("id", "doc_id", "source", "num_tokens", "drop", "text", "input_ids",
                                        "dedup_key", "messages")
    writes: ClassVar[tuple[str, ...]] = (*RAW_LEDGER_COLUMNS, "shard")
    layers: str
    proj_dim: int
    seed: int
    shard_dir: str
    stat_layers: int = 4  # decoder layers whose Linear inputs get per-chunk statistics (layerstats.py)

    def setup(self) -> None:
        import torch

        from cola_ray.models import find_decoder_layers, parse_layers

        super().setup()
        blocks = find_decoder_layers(self.lm)
        self.layer_ids = parse_layers(self.layers, len(blocks))
        counter = ExpertCounter(blocks, getattr(self.lm.config, "num_experts_per_tok", None))
        self.experts = counter if counter else None  # a dense model: nothing to count
        self.pooler = LayerPooler(self.lm, self.layer_ids, counter.deepest if counter else None)
        hidden = self.lm.get_input_embeddings().embedding_dim
        proj = projection_matrix(hidden * len(self.layer_ids), self.proj_dim, self.seed)
        self.projection = torch.from_numpy(proj).to(self.device)
        self.bos = adds_bos(self.tokenizer)
        chosen = stat_layer_ids(self.layer_ids, self.stat_layers)
        self.stats = InputStats(blocks, chosen, self.seed) if chosen else None
        self.columns = (*(STAT_COLUMNS if self.stats else ()), *(("expert_tokens",) if self.experts else ()))

    def embed(self, token_lists: list[list[int]], side: str = "right") -> tuple[np.ndarray, dict]:
        """[n, proj_dim] float32 for chunks given as token id lists (NaN rows if non-finite),
        and the chunks' optional columns (self.columns): layer-input statistics
        (layerstats.InputStats.chunk_stats) and routed tokens per expert (experts.py)."""
        ids, attn, pool = pad_batch(token_lists, self.pad, self.bos, side)
        per_layer = self.pooler.pooled(ids.to(self.device), attn.to(self.device), pool.to(self.device), self.stats,
                                       self.experts)
        flat = per_layer.flatten(1)
        vec = flat @ self.projection
        bad = ~(flat.isfinite().all(-1))
        vec[bad] = float("nan")
        extra = self.stats.chunk_stats() if self.stats else {}
        if self.experts:
            extra["expert_tokens"] = list(self.experts.counts())
        return vec.float().cpu().numpy(), extra

    def embed_sorted(self, token_lists: list[list[int]]) -> tuple[np.ndarray, dict[str, list]]:
        """embed() over length-sorted micro-batches, rows back in their input order."""
        out = np.empty((len(token_lists), self.proj_dim), np.float32)
        stats: dict[str, list] = {c: [None] * len(token_lists) for c in self.columns}
        for idx in self.micro_batches(token_lists):
            out[idx], batch_stats = self.embed([token_lists[i] for i in idx])
            for name, rows in batch_stats.items():
                for j, i in enumerate(idx):
                    stats[name][i] = rows[j]
        return out, stats

    def process(self, batch: pa.Table) -> pa.Table:
        drops = [d or ("duplicate" if n else "") for d, n in zip(batch.column("drop").to_pylist(),
                                                                 copies(batch.column("id").to_pylist()))]
        live = [i for i, d in enumerate(drops) if not d]
        tokens = batch.column("input_ids").to_pylist()
        vectors: list = [None] * batch.num_rows
        stats: dict[str, list] = {c: [None] * batch.num_rows for c in self.columns}
        if live:
            embedded, live_stats = self.embed_sorted([tokens[i] for i in live])
            for j, i in enumerate(live):
                if np.isfinite(embedded[j]).all():
                    vectors[i] = embedded[j]
                    for name, rows in live_stats.items():
                        stats[name][i] = rows[j]
                else:
                    drops[i] = "non_finite"
        shard = make_shard(batch, drops, vectors, self.proj_dim, optional=stats,
                           stats_layout=self.stats.layout() if self.stats and live else None,
                           experts_layout=self.experts.layout() if self.experts and live else None)
        uri = write_shard(self.shard_dir, shard)
        ledger = shard.select(list(RAW_LEDGER_COLUMNS))
        return ledger.append_column("shard", pa.array([shard_name(uri)] * ledger.num_rows, pa.string()))
