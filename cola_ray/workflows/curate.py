"""`cola-ray curate`: corpus -> chunks -> activations (Ray actors) -> FAISS k-means -> selection.

Owns the run: validation before anything heavy, the Ray Data pipeline, resume, the outputs and
the manifest (written last: a manifest means a complete run). COLA's stage 2 (filters, near-
dedup, Q&A format, packing) is wired in processing.py; stage 1 (coverage of --capabilities by
each source, and per-source quotas) in capabilities.py; stage 3 in clustering.py: with quotas, each
source on its own with k = its quota; without, one k-means over everything, as always.

Layout under --out:
  calibration.jsonl   the selected chunks (llm-compressor / datasets.load_dataset("json") ready)
  embeddings/         parquet, one row per embedded chunk with its vector, cluster and distance
                      (cluster -1: a source that got no quota)
  centroids.npy       k x proj_dim float32 (with quotas: each source's centroids in turn)
  activation_space.png  with --capabilities: candidates, probes and selection in a 2-D PCA
  manifest.json       config, versions, model hash, counts, objective, timings, artifacts, and
                      the processing settings and stage-1 coverage / weights / quotas
  work/activations/   shards (ledger + vectors + text) that a rerun with the same --out reuses
  work/probes/        the probe sets' shards (reused while settings and probe files are unchanged)
  work/near_duplicates.json  the near-dedup verdicts, reused by a rerun with the same settings
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.config import CurateConfig
from cola_ray.errors import UserError
from cola_ray.stages import activations, ingest, process, select
from cola_ray.workflows import capabilities, processing
from cola_ray.workflows.clustering import cluster_and_select, target_k
from cola_ray.workflows.common import RunClock, cpu_budget, ensure_ray, log, package_versions, progress
from cola_ray.workflows.embedding import embed

SHARDS = "work/activations"
# Settings that change what a shard contains: a rerun may reuse shards only if these match.
ACTIVATION_KEYS = ("model", "corpus", "seq_len", "min_tokens", "text_field", "layers", "proj_dim",
                   "seed", "dtype", "max_docs", "filters", "near_dup_threshold", "pack", "qa_format",
                   "qa_template", "qa_fields")
PACK_BATCH = 512  # documents per packing task: each task leaves at most one short sequence per source


def resolve_defaults(cfg: CurateConfig) -> CurateConfig:
    """No --model and no --corpus: the embedded default (real model, real offline corpus)."""
    from cola_ray import demo

    if cfg.model is None and not cfg.corpus:
        given = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default}
        updates = {k: v for k, v in demo.DEMO_DEFAULTS.items() if k not in given}
        cfg = dataclasses.replace(cfg, corpus=demo.demo_corpus(), **updates)
        cfg.out = cfg.out or os.path.join("runs", "demo")
    if cfg.model is None:
        cfg.model = demo.DEMO_DEFAULTS["model"]
    if not cfg.corpus:
        raise UserError("--corpus: required when --model is given")
    cfg.out = cfg.out or os.path.join("runs", "curate-" + time.strftime("%Y%m%d-%H%M%S"))
    return cfg.validate()


def _fingerprint(cfg: CurateConfig, files: list[ingest.CorpusFile]) -> dict:
    fp = {k: getattr(cfg, k) for k in ACTIVATION_KEYS}
    fp["files"] = [f.uri for f in files]
    return fp


def _prepare_out(cfg: CurateConfig, fingerprint: dict) -> int:
    """Check --out, retire an old manifest (this run is not complete yet), and return how many
    activation shards a previous run with the same settings left behind."""
    storage.check_writable(cfg.out)
    manifest = storage.join(cfg.out, "manifest.json")
    if storage.exists(manifest):
        old = storage.read_bytes(manifest)
        storage.write_bytes(storage.join(cfg.out, "history", f"manifest-{int(time.time())}.json"), old)
        storage.delete(manifest)
    marker = storage.join(cfg.out, SHARDS, "_settings.json")
    shards = storage.list_files(storage.join(cfg.out, SHARDS), ".parquet")
    if storage.exists(marker):
        previous = storage.read_json(marker)
        if previous != json.loads(json.dumps(fingerprint)):
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise UserError(f"--out {cfg.out}: holds activations of a run with other settings "
                            f"({', '.join(changed)}); use another --out or delete {cfg.out}/work")
    storage.write_json(marker, fingerprint)
    return len(shards)


def _done_ids(shard_uris: list[str]) -> set[str]:
    return set(storage.read_parquet(shard_uris, ["id"]).column("id").to_pylist())


def build_pipeline(cfg: CurateConfig, docs, done: set[str], device: str, proc: processing.Processing,
                   near_dups: dict[str, str]):
    """The streaming Ray Data plan from documents to the activation ledger (nothing runs until
    consumed)."""
    chunks = docs.map_batches(process.chunk_batch, fn_args=(cfg.model, cfg.seq_len, cfg.min_tokens),
                              fn_kwargs=dict(pack=proc.pack, quality=proc.quality, near_dups=near_dups),
                              batch_format="pyarrow", batch_size=PACK_BATCH if proc.pack else 64)
    # Exact dedup needs every copy of a key in one place: a hash shuffle by key (Ray Data groupby).
    deduped = chunks.groupby("dedup_key", num_partitions=min(200, 2 * cpu_budget())).map_groups(
        process.mark_duplicates, batch_format="pyarrow")
    if done:
        deduped = deduped.map_batches(_skip_done, fn_args=(frozenset(done),), batch_format="pyarrow")
    return embed(deduped, cfg, device, storage.join(cfg.out, SHARDS))


def _skip_done(batch: pa.Table, done: set[str]) -> pa.Table:
    mask = pa.array([i not in done for i in batch.column("id").to_pylist()])
    return batch.filter(mask)


def _counts(ledger: pa.Table, selected: pa.Table | None) -> dict:
    drop = ledger.column("drop").to_pylist()
    per_source: dict[str, dict] = {}
    for src in sorted(set(ledger.column("source").to_pylist())):
        rows = ledger.filter(pc.equal(ledger.column("source"), src))
        kept = rows.filter(pc.equal(rows.column("drop"), ""))
        per_source[src] = {
            # a packed sequence names all its documents; a document dropped whole has no tokens
            "documents": len({d for ids in rows.column("doc_id").to_pylist() for d in ids.split(" ")}),
            "chunks": int(pc.sum(pc.greater(rows.column("num_tokens"), 0)).as_py() or 0),
            "embedded": kept.num_rows,
            "tokens_embedded": int(pc.sum(kept.column("num_tokens")).as_py() or 0),
            "selected": 0 if selected is None else int(pc.sum(pc.equal(selected.column("source"), src)).as_py() or 0),
        }
    reasons: dict[str, int] = {}
    for d in drop:
        if d:
            reasons[d] = reasons.get(d, 0) + 1
    return {
        "documents": sum(s["documents"] for s in per_source.values()),
        "chunks": sum(s["chunks"] for s in per_source.values()),
        "dropped": dict(sorted(reasons.items())),
        "duplicates": reasons.get("duplicate", 0),
        "embedded": sum(s["embedded"] for s in per_source.values()),
        "selected": 0 if selected is None else selected.num_rows,
        "per_source": per_source,
    }


def write_outputs(cfg: CurateConfig, km, selected: pa.Table) -> list[str]:
    """calibration.jsonl rounds `distance` to 1e-4: the forward pass differs by ~1e-7 between batch
    shapes (BLAS blocking), which must not make two runs' files differ (embeddings/ keeps float32)."""
    lines = [json.dumps({"id": r["id"], "text": r["text"], "source": r["source"], "cluster": int(r["cluster"]),
                         "distance": round(float(r["distance"]), 4), "num_tokens": int(r["num_tokens"]),
                         "cluster_size": int(r["members"])}, ensure_ascii=False)
             for r in selected.to_pylist()]
    storage.write_text(storage.join(cfg.out, "calibration.jsonl"), "\n".join(lines) + "\n")
    buf = io.BytesIO()
    np.save(buf, km.centroids.astype(np.float32))
    storage.write_bytes(storage.join(cfg.out, "centroids.npy"), buf.getvalue())
    return ["calibration.jsonl", "embeddings/", "centroids.npy", f"{SHARDS}/"]


def _inputs(cfg: CurateConfig):
    """Corpus files, stage-1 options and probe files, stage-2 settings: all checked (first
    records included) before anything heavy starts."""
    files = ingest.discover(cfg.corpus)
    caps = capabilities.parse_options(cfg)
    if caps and cfg.selector != "cola":
        raise UserError(f"--capabilities: source quotas are honoured by --selector cola only, not {cfg.selector}")
    probe_files = caps.probe_files() if caps else []
    proc = processing.processing_options(cfg, [f.source for f in files + probe_files])
    ingest.validate(files, cfg.text_field, proc.formatters, proc.qa_first)
    for cap in caps.capabilities if caps else []:
        ingest.validate([f for f in probe_files if f.source == cap], cfg.text_field, proc.formatters,
                        proc.qa_first, flag=f"--probes {cap}=")
    return files, caps, probe_files, proc


def run_curate(cfg: CurateConfig) -> dict:
    """Run the whole curate workflow; returns the manifest (also written to --out)."""
    from cola_ray import models

    clock = RunClock()
    cfg = resolve_defaults(cfg)
    with clock("validate"):
        models.load_tokenizer(cfg.model)  # a bad --model fails here, in one line
        _check_model(cfg.model)
        files, caps, probe_files, proc = _inputs(cfg)
        fingerprint = _fingerprint(cfg, files)
        ensure_ray()
        previous = _prepare_out(cfg, fingerprint)
        shard_dir = storage.join(cfg.out, SHARDS)
        done = _done_ids(storage.list_files(shard_dir, ".parquet")) if previous else set()
        device = models.pick_device(cfg.device)
    if previous:
        log(f"resuming: {previous} activation shards already written ({len(done)} chunks), skipping them")
    log(f"reading {len(files)} file(s) from {len(set(f.source for f in files))} source(s); "
        f"{cfg.workers} activation worker(s) on {device}")
    docs = ingest.read_documents(files, cfg.text_field, cfg.max_docs, proc.formatters, proc.qa_first)
    with clock("near-dedup"):
        near_dups = processing.near_duplicates(cfg, docs, proc, fingerprint)
    with clock("ingest+process+activations"), progress("chunks embedded") as bar:
        new_rows = 0
        pipeline = build_pipeline(cfg, docs, done, device, proc, near_dups)
        for batch in pipeline.iter_batches(batch_format="pyarrow", batch_size=None):
            new_rows += batch.num_rows
            bar.update(int(pc.sum(pc.equal(batch.column("drop"), "")).as_py() or 0))
    shard_uris = storage.list_files(shard_dir, ".parquet")
    ledger = storage.read_parquet(shard_uris, list(activations.LEDGER_COLUMNS))
    n_embedded = int(pc.sum(pc.equal(ledger.column("drop"), "")).as_py() or 0)
    log(f"embedded {n_embedded} chunks ({new_rows} rows new this run, {len(shard_uris)} shards)")
    if cfg.selector != "cola":  # another registry selector: same pool, same calibration.jsonl layout
        from cola_ray.workflows.selection import select_and_write

        return select_and_write(cfg, cfg.selector, shard_uris, cfg.out, storage.join(cfg.out, "work", "selectors"),
                                clock, {"device": device, "resume": {"shards_reused": previous, "rows_new": new_rows}})
    quota = None
    if caps:
        with clock("probes"):
            probe_table = capabilities.embed_probes(cfg, probe_files, proc, device, fingerprint)
        with clock("coverage"):
            quota = capabilities.allocate(cfg, caps, probe_table, shard_uris, ledger, target_k(cfg, n_embedded))
    km, k, objective, selected, groups = cluster_and_select(cfg, shard_uris, n_embedded, clock,
                                                            quota.plan.quotas if quota else None)
    with clock("write"):
        artifacts = write_outputs(cfg, km, selected)
        if quota:
            artifacts.insert(-1, capabilities.plot(cfg, quota, shard_uris, selected))
    manifest = {
        "kind": "curate",
        "config": dataclasses.asdict(cfg),
        "versions": package_versions(),
        "model": dataclasses.asdict(models.model_identity(cfg.model)),
        "seed": cfg.seed,
        "device": device,
        "counts": _counts(ledger, selected),
        "resume": {"shards_reused": previous, "rows_new": new_rows},
        "kmeans": {"k": k, "objective": objective, "train_objective": km.train_objective,
                   "n_train": km.n_train, "restarts": km.restarts,
                   "empty_clusters": select.empty_clusters(selected, k), **({"groups": groups} if groups else {})},
        "processing": processing.manifest_section(proc, near_dups),
        **({"capabilities": capabilities.manifest_section(cfg, caps, quota)} if quota else {}),
        "timings_s": clock.timings,
        "artifacts": artifacts,
        "out": cfg.out,
    }
    storage.write_json(storage.join(cfg.out, "manifest.json"), manifest)  # last: marks completion
    return manifest


def _check_model(model: str) -> None:
    """Config-level check that --model is a decoder-only causal LM, without loading weights."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from cola_ray.models import resolve_model_path

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(model))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--model {model}: cannot read model config ({str(e).splitlines()[0]})") from None
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = getattr(config, "architectures", None) or []
    ok = (any(a in causal_classes for a in archs) if archs else config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    if not ok or getattr(config, "is_encoder_decoder", False):
        kind = ", ".join(archs) or config.model_type
        raise UserError(f"--model {model}: {kind} is not a decoder-only causal LM")
