"""The activation stage as curate wires it, shared by the candidate pass and the probe pass
(stage 1 embeds its probe texts with exactly the settings the candidates got)."""

from __future__ import annotations

from cola_ray.config import CurateConfig
from cola_ray.stages import activations, runner


def embed(chunks, cfg: CurateConfig, device: str, shard_dir: str, workers: int | None = None):
    """chunks (process.OUTPUT_SCHEMA rows) -> ledger rows, writing one shard per batch of
    --shard-size rows. `activations.ActivationExtractor` is looked up at call time (the
    benchmark swaps in a timed subclass)."""
    extractor = activations.ActivationExtractor(
        model=cfg.model, layers=cfg.layers, proj_dim=cfg.proj_dim, seed=cfg.seed, device=device, dtype=cfg.dtype,
        micro_batch_size=cfg.batch_size, shard_dir=shard_dir, batch_size=cfg.shard_size,
        stat_layers=cfg.stat_layers)
    return runner.run(chunks, extractor, workers=workers or cfg.workers)
