"""The activation actors as one Ray Data step, shared by the candidate pass and the probe pass
(stage 1 embeds its probe texts with exactly the settings the candidates got)."""

from __future__ import annotations

import os

from cola_ray.config import CurateConfig
from cola_ray.stages import activations
from cola_ray.workflows.common import cpu_budget


def actor_resources(cfg: CurateConfig, device: str, workers: int) -> dict:
    """One GPU per actor on CUDA. On CPU, Ray's accounting must leave a core to the read,
    tokenize and shuffle tasks (actors hold their CPUs for life, and Ray Data starts them
    eagerly), so on a small node actors get a fractional share of the CPUs."""
    if device == "cuda":
        return {"num_gpus": 1, "num_cpus": 1}
    total = cpu_budget()
    return {"num_cpus": 1.0 if total >= workers + 1 else max(0.1, (total - 1) / workers)}


def torch_threads(device: str, workers: int) -> int:
    return 1 if device == "cuda" else max(1, (os.cpu_count() or 1) // workers)


def embed(chunks, cfg: CurateConfig, device: str, shard_dir: str, workers: int | None = None):
    """chunks (process.OUTPUT_SCHEMA rows) -> ledger rows, writing one shard per batch."""
    import ray

    workers = workers or cfg.workers
    return chunks.map_batches(
        activations.ActivationExtractor,
        fn_constructor_kwargs=dict(model=cfg.model, layers=cfg.layers, proj_dim=cfg.proj_dim, seed=cfg.seed,
                                   device=device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                                   shard_dir=shard_dir, threads=torch_threads(device, workers)),
        compute=ray.data.ActorPoolStrategy(size=workers), batch_size=cfg.shard_size,
        # Ray Data restarts a dead actor and retries its batch (max_restarts=-1 by default);
        # shard names derive from their rows, so a retried batch rewrites the same file.
        batch_format="pyarrow", **actor_resources(cfg, device, workers),
    )
