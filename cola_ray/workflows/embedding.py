"""The activation stage as curate wires it, shared by the candidate pass and the probe pass
(stage 1 embeds its probe texts with exactly the settings the candidates got)."""

from __future__ import annotations

from cola_ray.config import ModelArgs, ResourcesArgs
from cola_ray.stages import activations, runner


def embed(chunks, model: ModelArgs, resources: ResourcesArgs, device: str, shard_dir: str,
          workers: int | None = None):
    """chunks (process.OUTPUT_SCHEMA rows) -> ledger rows, writing one shard per batch of
    --shard-size rows. `activations.ActivationExtractor` is looked up at call time (the
    benchmark swaps in a timed subclass)."""
    extractor = activations.ActivationExtractor(
        model=model.model, layers=model.layers, proj_dim=model.proj_dim, seed=model.seed, device=device,
        dtype=model.dtype, micro_batch_size=resources.batch_size, shard_dir=shard_dir, batch_size=resources.shard_size,
        stat_layers=model.stat_layers)
    return runner.run(chunks, extractor, workers=workers or resources.workers)
