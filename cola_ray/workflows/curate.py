"""`cola-ray curate`: corpus -> chunks -> activations (Ray actors) -> FAISS k-means -> selection.

Owns the run: validation before anything heavy, the Ray Data pipeline, resume, the outputs and
the manifest (written last: a manifest means a complete run).

Layout under --out:
  calibration.jsonl   the selected chunks (llm-compressor / datasets.load_dataset("json") ready)
  embeddings/         parquet, one row per embedded chunk with its vector, cluster and distance
  centroids.npy       k x proj_dim float32
  manifest.json       config, versions, model hash, counts, objective, timings, artifacts
  work/activations/   shards (ledger + vectors + text) that a rerun with the same --out reuses
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from cola_ray.stages import activations, cluster, ingest, process, select
from cola_ray.workflows.common import RunClock, cpu_budget, ensure_ray, log, package_versions, progress

SHARDS = "work/activations"
# Settings that change what a shard contains: a rerun may reuse shards only if these match.
ACTIVATION_KEYS = ("model", "corpus", "seq_len", "min_tokens", "text_field", "layers", "proj_dim",
                   "seed", "dtype", "max_docs")


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


def _actor_resources(cfg: CurateConfig, device: str) -> dict:
    """One GPU per actor on CUDA. On CPU, Ray's accounting must leave a core to the read,
    tokenize and shuffle tasks (actors hold their CPUs for life, and Ray Data starts them
    eagerly), so on a small node actors get a fractional share of the CPUs."""
    if device == "cuda":
        return {"num_gpus": 1, "num_cpus": 1}
    total = cpu_budget()
    return {"num_cpus": 1.0 if total >= cfg.workers + 1 else max(0.1, (total - 1) / cfg.workers)}


def build_pipeline(cfg: CurateConfig, files, done: set[str], device: str):
    """The streaming Ray Data plan up to the activation ledger (nothing runs until consumed)."""
    import ray

    docs = ingest.read_documents(files, cfg.text_field, cfg.max_docs)
    chunks = docs.map_batches(process.chunk_batch, fn_args=(cfg.model, cfg.seq_len, cfg.min_tokens),
                              batch_format="pyarrow", batch_size=64)
    # Exact dedup needs every copy of a key in one place: a hash shuffle by key (Ray Data groupby).
    deduped = chunks.groupby("dedup_key", num_partitions=min(200, 2 * cpu_budget())).map_groups(
        process.mark_duplicates, batch_format="pyarrow")
    if done:
        deduped = deduped.map_batches(_skip_done, fn_args=(frozenset(done),), batch_format="pyarrow")
    shard_dir = storage.join(cfg.out, SHARDS)
    return deduped.map_batches(
        activations.ActivationExtractor,
        fn_constructor_kwargs=dict(model=cfg.model, layers=cfg.layers, proj_dim=cfg.proj_dim, seed=cfg.seed,
                                   device=device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                                   shard_dir=shard_dir, threads=_threads(cfg, device)),
        compute=ray.data.ActorPoolStrategy(size=cfg.workers), batch_size=cfg.shard_size,
        # Ray Data restarts a dead actor and retries its batch (max_restarts=-1 by default);
        # shard names derive from their rows, so a retried batch rewrites the same file.
        batch_format="pyarrow", **_actor_resources(cfg, device),
    )


def _threads(cfg: CurateConfig, device: str) -> int:
    return 1 if device == "cuda" else max(1, (os.cpu_count() or 1) // cfg.workers)


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
            "documents": len(set(rows.column("doc_id").to_pylist())),
            "chunks": int(pc.sum(pc.not_equal(rows.column("drop"), "empty")).as_py() or 0),
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


def _train_local(cfg: CurateConfig, shard_uris: list[str], k: int) -> cluster.KMeansResult:
    """FAISS on the driver, trained on a seeded id-hash sample of at most k * points_per_centroid."""
    vectors = storage.read_parquet(shard_uris, ["id", "vector"], filter=pc.field("drop") == "").sort_by("id")
    frac = cluster.sample_fraction(vectors.num_rows, k, cfg.kmeans_points_per_centroid)
    train = vectors.filter(pa.array(cluster.in_sample(vectors.column("id").to_pylist(), frac, cfg.seed)))
    if train.num_rows < k:  # the hashed sample came out a little small: use everything
        train = vectors
    return cluster.train_kmeans(cluster.vectors_of(train), k, cfg.seed, cfg.kmeans_iters, cfg.kmeans_restarts)


def _train_distributed(cfg: CurateConfig, embedded, k: int) -> cluster.KMeansResult:
    """--kmeans-mode distributed: Lloyd iterations over Ray actors that each hold a shard of the
    vectors; the driver only ever holds k centroids (stages/kmeans_distributed.py)."""
    from cola_ray.stages.kmeans_distributed import distributed_kmeans

    res = distributed_kmeans(embedded.select_columns(["id", "vector"]), k, seed=cfg.seed,
                             num_workers=max(1, cfg.workers), max_iter=cfg.kmeans_iters, cpus_per_worker=0.5)
    return cluster.KMeansResult(res.centroids, float(res.objective), -1, 1)


def cluster_and_select(cfg: CurateConfig, shard_uris: list[str], n_embedded: int, clock: RunClock):
    import ray

    fs, _ = storage.filesystem(cfg.out)
    k = cfg.num_samples
    if n_embedded < k:
        if not cfg.allow_fewer:
            raise UserError(f"--num-samples {k}: only {n_embedded} candidate chunks survived processing "
                            f"(pass --allow-fewer to select them all)")
        k = n_embedded
    if n_embedded == 0:
        raise UserError("--corpus: no chunk survived processing; nothing to select")
    paths = [storage.filesystem(u)[1] for u in shard_uris]
    embedded = (ray.data.read_parquet(paths, filesystem=fs, columns=["id", "source", "num_tokens", "vector", "drop"])
                .filter(expr="drop == ''").drop_columns(["drop"]))
    with clock("cluster"):
        km = _train_distributed(cfg, embedded, k) if cfg.kmeans_mode == "distributed" else _train_local(cfg, shard_uris, k)
    with clock("assign+select"):
        emb_dir = storage.join(cfg.out, "embeddings")
        storage.delete(emb_dir)
        summaries = embedded.map_batches(_assign_write_summarize, fn_args=(km.centroids, emb_dir),
                                         batch_format="pyarrow")
        summary = select.summarize_clusters(pa.concat_tables(ray.get(summaries.to_arrow_refs())))
        objective = float(pc.sum(summary.column("sq_sum")).as_py())
        texts = storage.read_parquet(shard_uris, ["id", "text"], filter=pc.field("id").isin(summary.column("id")))
        selected = summary.join(texts, "id").sort_by([("cluster", "ascending")])
    return km, k, objective, selected


def _assign_write_summarize(batch: pa.Table, centroids: np.ndarray, emb_dir: str) -> pa.Table:
    """One Ray task per block: assign to centroids, write the block's embeddings file, and return
    only its per-cluster summary (k rows at most) to the driver."""
    assigned = cluster.assign(batch, centroids)
    name = hashlib.sha1("\n".join(assigned.column("id").to_pylist()).encode()).hexdigest()[:20]
    storage.write_parquet(storage.join(emb_dir, f"part-{name}.parquet"), assigned)
    return select.summarize_clusters(assigned.drop_columns(["vector"]))


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


def run_curate(cfg: CurateConfig) -> dict:
    """Run the whole curate workflow; returns the manifest (also written to --out)."""
    from cola_ray import models

    clock = RunClock()
    cfg = resolve_defaults(cfg)
    with clock("validate"):
        models.load_tokenizer(cfg.model)  # a bad --model fails here, in one line
        _check_model(cfg.model)
        files = ingest.discover(cfg.corpus)
        ingest.validate(files, cfg.text_field)
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
    with clock("ingest+process+activations"), progress("chunks embedded") as bar:
        new_rows = 0
        for batch in build_pipeline(cfg, files, done, device).iter_batches(batch_format="pyarrow", batch_size=None):
            new_rows += batch.num_rows
            bar.update(int(pc.sum(pc.equal(batch.column("drop"), "")).as_py() or 0))
    shard_uris = storage.list_files(shard_dir, ".parquet")
    ledger = storage.read_parquet(shard_uris, list(activations.LEDGER_COLUMNS))
    n_embedded = int(pc.sum(pc.equal(ledger.column("drop"), "")).as_py() or 0)
    log(f"embedded {n_embedded} chunks ({new_rows} rows new this run, {len(shard_uris)} shards)")
    km, k, objective, selected = cluster_and_select(cfg, shard_uris, n_embedded, clock)
    with clock("write"):
        artifacts = write_outputs(cfg, km, selected)
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
                   "empty_clusters": select.empty_clusters(selected, k)},
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
