"""Apply a registry selector to a curate pool and write the calibration set + its manifest.

Used by `cola-ray curate --selector NAME` (any selector but the default `cola`, whose path in
curate.py is unchanged) and by the sweep, which curates one pool per seed and applies every
selector to it. Output layout under `out`: calibration.jsonl (selectors/output.py) and
manifest.json (written last: a manifest means a complete selection).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from cola_ray import storage
from cola_ray.config import CurateConfig
from cola_ray.selectors import Pool, SelectorContext, calibration_lines, get_selector
from cola_ray.stages import activations
from cola_ray.workflows.clustering import target_k
from cola_ray.workflows.common import RunClock, package_versions


def select_and_write(cfg: CurateConfig, selector: str, shard_uris: list[str], out: str, work_dir: str | None,
                     clock: RunClock | None = None, extra: dict | None = None) -> dict:
    """Run `selector` on the pool in `shard_uris`, write `out`/calibration.jsonl and
    `out`/manifest.json; return the manifest. `work_dir`: the selector's cache folder (shared
    by every selector and seed over one pool, e.g. perplexity scores)."""
    from cola_ray import models
    from cola_ray.workflows.curate import _counts  # the per-source counts curate reports

    clock = clock or RunClock()
    spec = get_selector(selector)
    ledger = storage.read_parquet(shard_uris, list(activations.LEDGER_COLUMNS))
    n_embedded = sum(1 for d in ledger.column("drop").to_pylist() if not d)
    k = target_k(cfg, n_embedded)
    pool = Pool(tuple(shard_uris))
    with clock(f"select ({selector})"):
        selection = spec.select(pool, k, SelectorContext.from_curate(cfg, work_dir))
        chosen = set(selection.column("id").to_pylist())
        chunks = pool.read(["text", "source", "num_tokens"])
        chunks = chunks.filter(pa.array([i in chosen for i in chunks.column("id").to_pylist()]))
    with clock("write"):
        storage.write_text(storage.join(out, "calibration.jsonl"), calibration_lines(selection, chunks))
    manifest = {
        "kind": "curate",
        "config": {**dataclasses.asdict(cfg), "selector": selector},
        "versions": package_versions(),
        "model": dataclasses.asdict(models.model_identity(cfg.model)),
        "seed": cfg.seed,
        "counts": _counts(ledger, chunks),
        "selector": {"name": selector, "description": spec.description, "score": spec.score,
                     "uses_seed": spec.uses_seed, "params": spec.params, "k": k},
        "pool": {"shards": len(shard_uris), "candidates": n_embedded,
                 "folder": shard_uris[0].rsplit("/", 1)[0] if shard_uris else None},
        **(extra or {}),
        "timings_s": clock.timings,
        "artifacts": ["calibration.jsonl"],
        "out": out,
    }
    storage.write_json(storage.join(out, "manifest.json"), manifest)
    return manifest
