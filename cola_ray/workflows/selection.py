"""The one selection path: pool -> (per-source quotas) -> any registry selector -> calibration set.

`choose` applies a selector to a pool. Without quotas it runs once with k; with stage-1 quotas
(source -> samples) it runs once per source that has a quota, on that source's view of the pool
with k = its quota, so `--capabilities` works with every selector. The per-source selections
are concatenated in source-name order, their `cluster` column (a cluster id or a rank) offset
by the quotas before them, so ids stay unique and each source's rows stay together.

`write_selection` writes calibration.jsonl (selectors/output.py) and the selector's artifacts;
`manifest` builds the one manifest shape every selector gets. Used by `cola-ray curate` and by
the sweep, which applies every selector with every seed to its pools.
"""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.pool import Pool
from cola_ray.selectors import Selection, Selector, SelectorContext, calibration_lines, read_calibration
from cola_ray.workflows import experts as expert_coverage
from cola_ray.workflows.handoff import write_handoff

MANIFEST_VERSION = 2  # 1: before the one selection path (cola's `kmeans` / others' `selector` sections).
# The only readers of older manifests (a sweep reusing its pools and sets, `sweep --report-only`)
# read `timings_s` and the calibration.jsonl beside them, which both versions have alike.


def target_k(num_samples: int, n_embedded: int, allow_fewer: bool) -> int:
    if n_embedded == 0:
        raise UserError("--corpus: no chunk survived processing; nothing to select")
    if n_embedded < num_samples:
        if not allow_fewer:
            raise UserError(f"--num-samples {num_samples}: only {n_embedded} candidate chunks survived processing "
                            f"(pass --allow-fewer to select them all)")
        return n_embedded
    return num_samples


def choose(pool: Pool, spec: Selector, k: int, ctx: SelectorContext, quotas: dict[str, int] | None = None) -> Selection:
    """`spec` applied to `pool` (k rows), or to each source's view with k = its quota."""
    if quotas is None:
        return spec.select(pool, k, ctx)
    groups = [(s, q) for s, q in sorted(quotas.items()) if q > 0]
    parts, offset = [], 0
    for source, q in groups:
        parts.append((source, q, offset, spec.select(pool.only(source), q, ctx)))
        offset += q
    return _combine(spec, parts)


def _offset(table: pa.Table, offset: int) -> pa.Table:
    if "cluster" not in table.column_names or offset == 0:
        return table
    i = table.schema.get_field_index("cluster")
    col = table.column(i)
    shifted = pc.if_else(pc.greater_equal(col, 0), pc.add(col, pa.scalar(offset, col.type)), col)
    return table.set_column(i, "cluster", shifted)


def _combine(spec: Selector, parts: list[tuple[str, int, int, Selection]]) -> Selection:
    table = pa.concat_tables([_offset(sel.table, off) for _, _, off, sel in parts])
    artifacts = {}
    for name in parts[0][3].artifacts if parts else ():
        values = [(off, sel.artifacts[name]) for _, _, off, sel in parts]
        artifacts[name] = (np.vstack([v for _, v in values]) if isinstance(values[0][1], np.ndarray)
                           else pa.concat_tables([_offset(v, off) for off, v in values]))
    groups = [(s, q, off, sel.details) for s, q, off, sel in parts]
    details = (spec.merge_details(groups) if spec.merge_details
               else {"groups": [{"source": s, "k": q, **d} for s, q, _, d in groups]})
    return Selection(table, details, artifacts)


def write_selection(out: str, pool: Pool, selection: Selection) -> tuple[list[str], pa.Table, list[dict]]:
    """calibration.jsonl (exactly the selected rows, none empty) and the selector's artifacts
    under `out`; returns the artifact names, the selected chunks (id, text, source, num_tokens)
    and calibration.jsonl's rows in its order."""
    ids = selection.table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise UserError(f"selection: a chunk was selected twice ({len(ids) - len(set(ids))} repeats)")
    chunks = pool.read(["text", "source", "num_tokens", "messages"], ids=ids)
    if chunks.num_rows != len(ids) or any(not t for t in chunks.column("text").to_pylist()):
        raise UserError(f"pool {pool.folder}: selected chunks without text; delete {pool.folder} and rerun")
    lines = calibration_lines(selection.table, chunks)
    storage.write_text(storage.join(out, "calibration.jsonl"), lines)
    names = ["calibration.jsonl"]
    for name, value in selection.artifacts.items():
        if isinstance(value, np.ndarray):
            buf = io.BytesIO()
            np.save(buf, value.astype(np.float32))
            storage.write_bytes(storage.join(out, name), buf.getvalue())
            names.append(name)
        else:
            folder = storage.join(out, name)
            storage.delete(folder)
            storage.write_parquet(storage.join(folder, "part-0.parquet"), value)
            names.append(name + "/")
    return names, chunks, read_calibration(lines)


def manifest(*, config: dict, model: dict, versions: dict, pool: Pool, spec: Selector, k: int,
             ctx: SelectorContext, selection: Selection, selected: pa.Table, quotas: dict | None,
             seconds: float, out: str, timings: dict, artifacts: list[str], tokens: dict | None = None,
             device: str | None = None, experts: dict | None = None,
             resume: dict | None = None, processing: dict | None = None, capabilities: dict | None = None) -> dict:
    """The one manifest shape of a selection (curate runs and sweep sets alike): the same
    top-level keys for every selector; the selector's own details under `selection`."""
    params = ctx.params if dataclasses.is_dataclass(ctx.params) else spec.parse_params(ctx.params)
    return {
        "kind": "curate",
        "schema_version": MANIFEST_VERSION,
        "config": config,
        "versions": versions,
        "model": model,
        "seed": ctx.seed,
        "device": device,
        "counts": pool.counts(selected.column("id").to_pylist()),
        "pool": {"folder": pool.folder, "shards": len(pool.shard_uris), "candidates": len(pool)},
        "selection": {"selector": spec.name, "description": spec.description, "score": spec.score,
                      "uses_seed": spec.uses_seed, "params": dataclasses.asdict(params), "k": k,
                      "quotas": quotas, "seconds": round(seconds, 3), "tokens": tokens,
                      "details": selection.details, "experts": experts},
        "processing": processing,
        "capabilities": capabilities,
        "resume": resume,
        "timings_s": timings,
        "artifacts": artifacts,
        "out": out,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def select_and_write(cfg, spec: Selector, pool: Pool, out: str, work_dir: str | None, clock=None, *,
                     quotas: dict[str, int] | None = None, after=None, capabilities=None,
                     probe_pool: str | None = None, **extra) -> dict:
    """Apply `spec` to `pool` for the curate config `cfg` (k from --num-samples, quotas when
    given), write `out`/calibration.jsonl, the selector's artifacts and, last, `out`/manifest.json.
    `after(selected)` may write more artifacts (returns their names); `capabilities()` gives the
    manifest's stage-1 section; `probe_pool`: the run's embedded probes (selectors may target
    their statistics). Returns the manifest."""
    from cola_ray import models
    from cola_ray.workflows.common import RunClock, package_versions

    clock = clock or RunClock()
    args, model, resources = cfg.selection_args(), cfg.model_args(), cfg.resources_args()
    k = target_k(args.num_samples, len(pool), args.allow_fewer)
    ctx = SelectorContext(model=model.model, seed=args.seed, seq_len=cfg.seq_len, device=model.device,
                          dtype=model.dtype, workers=resources.workers, batch_size=resources.batch_size,
                          work_dir=work_dir, params=spec.parse_params(args.params_for(spec)), probe_pool=probe_pool)
    t0 = time.perf_counter()
    with clock(f"select ({spec.name})"):
        selection = choose(pool, spec, k, ctx, quotas)
        selection, experts, expert_totals = expert_coverage.apply(pool, selection, quotas, args.min_tokens_per_expert,
                                                                  args.allow_more)
    seconds = time.perf_counter() - t0
    with clock("write"):
        artifacts, selected, written = write_selection(out, pool, selection)
        if experts:
            storage.write_bytes(storage.join(out, expert_coverage.PLOT),
                                expert_coverage.plot(experts, expert_totals, selection.table.num_rows))
            artifacts.append(expert_coverage.PLOT)
        handed, tokens = write_handoff(out, model.model, cfg.seq_len, written)  # in calibration.jsonl's order
        artifacts += handed
        if after is not None:
            artifacts += after(selected)
    m = manifest(config={**dataclasses.asdict(cfg), "selector": spec.name}, model=dataclasses.asdict(
                 models.model_identity(model.model)), versions=package_versions(), pool=pool, spec=spec, k=k, ctx=ctx,
                 selection=selection, selected=selected, quotas=quotas, seconds=seconds, out=out, tokens=tokens,
                 timings=clock.timings, artifacts=artifacts + [pool_artifact(pool, out)], experts=experts,
                 capabilities=capabilities() if capabilities else None, **extra)
    storage.write_json(storage.join(out, "manifest.json"), m)  # last: marks completion
    return m


def pool_artifact(pool: Pool, out: str) -> str:
    """The pool's folder as the manifest names it: relative to `out` when inside it."""
    folder = pool.folder
    prefix = out.rstrip("/") + "/"
    return folder[len(prefix):] + "/" if folder.startswith(prefix) else folder
