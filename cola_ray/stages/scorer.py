"""The forward pass of `cola-ray score`: one row = one calibration set (or one capability's probes).

An actor holds one model (the ActivationExtractor's: same layers, projection, seed and
statistics as curate, so a scored set lives in the pool's space). Per set it embeds every text
(cut to --seq-len, never dropped), records the per-chunk statistics, accumulates E[x x^T] of
every Linear input of the stat layers, and then, for each recipe, compresses those Linears from
the set's statistics and measures the output error on each capability's probe inputs
(proxies.py). Only small numbers leave the actor, except for a probe row, whose second-moment
matrices are written to `hessian_dir` (one .npz per capability) for the set actors to load.

Peak memory beyond the model: one E[x x^T] per Linear input of the stat layers, float32, for the
set and for each capability's probes: 4 layers x (3 x hidden^2 + intermediate^2) x 4 bytes x
(1 + capabilities); SmolLM2-135M ~160 MB with 2 capabilities, an 8B model (4096 / 14336) ~10 GB:
pass fewer --stat-layers there.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa

from cola_ray import storage
from cola_ray.stages import proxies
from cola_ray.stages.activations import ActivationExtractor

OUTPUT_COLUMNS = ("set", "vectors", "stat_moments", "stat_sketch", "stat_outliers", "tokens", "truncated",
                  "empty", "layer_error", "seconds")


def _key(group) -> str:
    return f"{group[0]}:{group[1]}"


@dataclass(kw_only=True)
class SetScorer(ActivationExtractor):
    reads: ClassVar[tuple[str, ...]] = ("set", "texts")
    writes: ClassVar[tuple[str, ...]] = OUTPUT_COLUMNS
    shard_dir: str = ""
    seq_len: int = 2048
    recipes: list = field(default_factory=list)  # (name, family, params)
    hessian_dir: str = ""
    capabilities: list = field(default_factory=list)  # whose probe hessians to load (set rows)
    probe_rows: bool = False  # rows are capabilities' probes: write their hessians, score nothing

    def setup(self) -> None:
        super().setup()
        if self.stats is None:
            from cola_ray.errors import UserError

            raise UserError("--stat-layers 0: scoring needs at least one stat layer")
        self.stats.want_hessians = bool(self.recipes) or self.probe_rows
        self._probe_h: dict[str, dict] | None = None

    def _probe_hessians(self) -> dict[str, dict]:
        import torch

        if self._probe_h is None:
            self._probe_h = {}
            for cap in self.capabilities:
                data = np.load(io.BytesIO(storage.read_bytes(storage.join(self.hessian_dir, f"{cap}.npz"))))
                self._probe_h[cap] = {k: torch.from_numpy(data[k]) for k in data.files}
        return self._probe_h

    def process(self, batch: pa.Table) -> pa.Table:
        rows = [self._one(name, texts) for name, texts in zip(batch.column("set").to_pylist(),
                                                              batch.column("texts").to_pylist())]
        return pa.Table.from_pylist(rows, schema=pa.schema([
            ("set", pa.string()), ("vectors", pa.list_(pa.list_(pa.float32()))),
            ("stat_moments", pa.list_(pa.list_(pa.float32()))), ("stat_sketch", pa.list_(pa.list_(pa.float32()))),
            ("stat_outliers", pa.list_(pa.list_(pa.int32()))), ("tokens", pa.list_(pa.int32())),
            ("truncated", pa.int32()), ("empty", pa.int32()), ("layer_error", pa.string()), ("seconds", pa.float64()),
            ("expert_tokens", pa.list_(pa.int64())), ("expert_layout", pa.string())]))

    def _one(self, name: str, texts: list[str]) -> dict:
        import time

        t0 = time.perf_counter()
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, verbose=False)
        ids = [list(t) for t in enc["input_ids"]]
        truncated = sum(len(t) > self.seq_len for t in ids)
        empty = sum(not t for t in ids)
        live = [t[: self.seq_len] for t in ids if t]
        self.stats.hessians.clear()
        self.stats.tokens = 0
        vectors, stats = self.embed_sorted(live) if live else (np.zeros((0, self.proj_dim), np.float32), {})
        hessians = {g: h / max(self.stats.tokens, 1) for g, h in self.stats.hessians.items()}
        errors: dict = {}
        if self.probe_rows and hessians:
            buf = io.BytesIO()
            np.savez(buf, **{_key(g): h.cpu().numpy() for g, h in hessians.items()})
            storage.write_bytes(storage.join(self.hessian_dir, f"{name}.npz"), buf.getvalue())
        elif hessians:
            errors = self._layer_errors(hessians)
        return {"set": name, "vectors": [v.tolist() for v in vectors],
                "stat_moments": [np.asarray(m).tolist() for m in stats.get("stat_moments", [])],
                "stat_sketch": [np.asarray(m).tolist() for m in stats.get("stat_sketch", [])],
                "stat_outliers": [np.asarray(m).tolist() for m in stats.get("stat_outliers", [])],
                "tokens": [len(t) for t in live], "truncated": truncated, "empty": empty,
                "layer_error": json.dumps(errors), "seconds": time.perf_counter() - t0,
                # MoE: the set's routed tokens per expert (summed over its texts) and where they lie
                "expert_tokens": (np.sum(stats["expert_tokens"], 0).tolist() if stats.get("expert_tokens") else []),
                "expert_layout": json.dumps(self.experts.layout()) if self.experts else ""}

    def _layer_errors(self, hessians: dict) -> dict:
        """{recipe: {capability: mean relative output error over the stat layers' Linears}}."""
        import torch

        from cola_ray.models import find_decoder_layers

        blocks = find_decoder_layers(self.lm)
        probes = self._probe_hessians()
        out: dict = {}
        with torch.no_grad():
            for recipe, family, params in self.recipes:
                errs: dict[str, list[float]] = {c: [] for c in probes}
                for group, h in hessians.items():
                    layer, _ = group
                    for member in self.stats.members(group):
                        weight = blocks[layer].get_submodule(member).weight.detach().float()
                        w_hat = proxies.compress_weight(weight, family, params, hessian=h, norms=torch.diag(h).clone())
                        for cap, ph in probes.items():
                            if _key(group) in ph:
                                errs[cap].append(proxies.output_error(weight, w_hat, ph[_key(group)]))
                out[recipe] = {c: float(np.mean(v)) for c, v in errs.items() if v}
        return out
