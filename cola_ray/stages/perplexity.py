"""Perplexity scoring: (id, text) rows -> (id, nll), the mean next-token NLL under the model.

Each text is tokenized exactly as a calibration sample is (the model's tokenizer with its default
special tokens, cut to seq_len), so the score is that of the sequence a compressor would see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from cola_ray.models import calibration_token_ids
from cola_ray.stages.base import ModelStage


@dataclass(kw_only=True)
class PerplexityScorer(ModelStage):
    """One per actor; micro-batches of similar length keep padding small."""

    reads: ClassVar[tuple[str, ...]] = ("id", "text")
    writes: ClassVar[tuple[str, ...]] = ("id", "nll")
    batch_size: int | None = 64
    seq_len: int

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
            logits = self.lm(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None].to(self.device))[..., 0]
        valid = mask[:, 1:].to(self.device).float()
        return (-(logp * valid).sum(1) / valid.sum(1).clamp(min=1)).cpu().tolist()

    def process(self, batch: pa.Table) -> pa.Table:
        tokens = calibration_token_ids(batch.column("text").to_pylist(), self.tokenizer, self.seq_len)
        nll = [0.0] * len(tokens)
        for idx in self.micro_batches(tokens):
            for i, v in zip(idx, self.nll([tokens[i] for i in idx])):
                nll[i] = v
        return pa.table({"id": batch.column("id"), "nll": pa.array(nll, pa.float64())})
