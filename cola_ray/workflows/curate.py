"""`cola-ray curate`: corpus -> chunks -> activations (Ray actors) -> the pool -> a selection.

Owns the run: validation before anything heavy, the Ray Data pipeline, resume, and the hand-off
of the pool to the one selection path (selection.py writes the outputs and the manifest, last:
a manifest means a complete run). COLA's processing (filters, near-dedup, Q&A format, packing)
is wired in processing.py; its source selection (coverage of --capabilities by each source, and
per-source quotas) in capabilities.py; its sample selection is the `cola` selector, one
selector among others: with quotas, every selector runs on each source with k = its quota.

Layout under --out:
  calibration.jsonl   the selected chunks (llm-compressor / datasets.load_dataset("json") ready)
  embeddings/         (cola) parquet, one row per clustered chunk with its vector, cluster and distance
                      (with quotas: the chunks of the sources that got one)
  centroids.npy       (cola) k x proj_dim float32 (with quotas: each source's centroids in turn)
  activation_space.png  with --capabilities: candidates, probes and selection in a 2-D PCA
  manifest.json       config, versions, model hash, counts, objective, timings, artifacts, and
                      the processing settings and stage-1 coverage / weights / quotas
  work/activations/   shards (ledger + vectors + text) that a rerun with the same --out reuses
  work/probes/        the probe sets' shards (reused while settings and probe files are unchanged)
  work/near_duplicates.json  the near-dedup verdicts, reused by a rerun with the same settings
"""

from __future__ import annotations

import dataclasses
import os
import time

import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.cache import Marker, canonical
from cola_ray.config import CurateConfig
from cola_ray.errors import UserError
from cola_ray.pool import RAW_LEDGER_COLUMNS, Pool, set_aside_unreadable
from cola_ray.stages import ingest, neardup, process, runner
from cola_ray.stages.base import FunctionStage
from cola_ray.workflows import capabilities, processing
from cola_ray.workflows.selection import select_and_write, target_k
from cola_ray.workflows.common import RunClock, ensure_ray, log, progress
from cola_ray.workflows.embedding import embed

SHARDS = "work/activations"
SKIPPED = "work/skipped-files"  # --skip-bad-files: one note per file found corrupt partway
BROKEN = "work/broken-shards"  # a resumed run's unreadable shards, moved aside (pool.set_aside_unreadable)
# Settings that change what a shard contains: a rerun may reuse shards only if these match.
ACTIVATION_KEYS = ("model", "corpus", "seq_len", "min_tokens", "text_field", "layers", "proj_dim",
                   "seed", "dtype", "first_docs", "filters", "near_dup_threshold", "pack", "qa_format",
                   "qa_template", "qa_fields", "stat_layers")
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
    fp["max_docs"] = fp.pop("first_docs")  # its name in the markers of runs before the rename
    for key in ("max_candidates", "sample_fraction"):  # absent unless set: older markers still match
        if getattr(cfg, key) is not None:
            fp[key] = getattr(cfg, key)
    for key, default in (("chat_template", "auto"), ("enable_thinking", "auto"), ("qa_chat", "False")):  # likewise
        if str(getattr(cfg, key)) != default:
            fp[key] = getattr(cfg, key)
    fp["files"] = [f.uri for f in files]
    return fp


def _prepare_out(cfg: CurateConfig, fingerprint: dict) -> tuple[int, list[str]]:
    """Check --out, retire an old manifest (this run is not complete yet), set aside the
    unreadable shards of a previous run, and return how many readable activation shards a
    previous run with the same settings left behind (and the names of those set aside)."""
    storage.check_writable(cfg.out)
    manifest = storage.join(cfg.out, "manifest.json")
    if storage.exists(manifest):
        storage.move(manifest, storage.join(cfg.out, "history", f"manifest-{int(time.time())}.json"))
    marker = Marker(storage.join(cfg.out, SHARDS, "_settings.json"))
    shards = storage.list_files(storage.join(cfg.out, SHARDS), ".parquet")
    old = marker.read()
    if old is not None and old != canonical(fingerprint):
        differences = sorted(k for k in fingerprint if old.get(k) != canonical(fingerprint)[k])
        raise UserError(f"--out {cfg.out}: holds activations of a run with other settings "
                        f"({', '.join(differences)}); use another --out or delete {cfg.out}/work")
    marker.write(fingerprint)
    broken = set_aside_unreadable(storage.join(cfg.out, SHARDS), storage.join(cfg.out, BROKEN)) if shards else []
    if broken:
        log(f"resuming: {len(broken)} unreadable activation shard(s) moved to {storage.join(cfg.out, BROKEN)} "
            f"({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}); their chunks are embedded again")
    return len(shards) - len(broken), broken


def build_pipeline(cfg: CurateConfig, docs, done: set[str], device: str, proc: processing.Processing,
                   near_dups: dict[str, str]):
    """The streaming Ray Data plan from documents to the activation ledger (nothing runs until
    consumed)."""
    chunks = runner.run(docs, FunctionStage(
        process.chunk_batch, args=(cfg.model, cfg.seq_len, cfg.min_tokens),
        kwargs=dict(pack=proc.pack, quality=proc.quality, near_dups=neardup.Verdicts(near_dups)),
        batch_size=PACK_BATCH if proc.pack else 64))
    # No shuffle in front of the actors: chunks stream straight to them, and exact duplicates (a
    # document the corpus holds twice, a chunk of text two documents share) are resolved by the
    # pool from the small ledger (pool.resolve), so only ids and keys ever meet, never payload.
    if done:
        chunks = runner.run(chunks, FunctionStage(_skip_done, args=(frozenset(done),)))
    return embed(chunks, cfg.model_args(), cfg.resources_args(), device, storage.join(cfg.out, SHARDS))


def _first_chunks(ledger: pa.Table) -> int:
    """Rows of a raw ledger that are a document's first chunk (one per document read)."""
    return int(pc.sum(pc.ends_with(ledger.column("id"), "#0")).as_py() or 0)


def _skip_done(batch: pa.Table, done: set[str]) -> pa.Table:
    mask = pa.array([i not in done for i in batch.column("id").to_pylist()])
    return batch.filter(mask)


def _inputs(cfg: CurateConfig):
    """Corpus files, selector, stage-1 options and probe files, stage-2 settings: all checked
    (first records included) before anything heavy starts."""
    from cola_ray.selectors import get_selector

    files = ingest.discover(cfg.corpus)
    try:
        spec = get_selector(cfg.selector)
    except UserError as e:
        raise UserError(f"--selector: {e}") from None
    spec.parse_params(cfg.selection_args().params_for(spec))
    caps = capabilities.parse_options(cfg.coverage_args())
    probe_files = caps.probe_files() if caps else []
    proc = processing.processing_options(cfg.processing_args(), cfg.model, cfg.text_field,
                                         [f.source for f in files + probe_files])
    ingest.validate(files, cfg.text_field, proc.formatters, proc.qa_first, renderer=proc.chat)
    for cap in caps.capabilities if caps else []:
        ingest.validate([f for f in probe_files if f.source == cap], cfg.text_field, proc.formatters,
                        proc.qa_first, flag=f"--probes {cap}=", renderer=proc.chat)
    return files, spec, caps, probe_files, proc


def run_curate(cfg: CurateConfig) -> dict:
    """Run the whole curate workflow; returns the manifest (also written to --out). One run at a
    time per --out (lock.py)."""
    from cola_ray import lock

    cfg = resolve_defaults(cfg)
    with lock.hold(cfg.out, "curate"):
        return _curate(cfg)


def _curate(cfg: CurateConfig) -> dict:
    from cola_ray import models

    clock = RunClock()
    with clock("validate"):
        models.load_tokenizer(cfg.model)  # a bad --model fails here, in one line
        _check_model(cfg)
        files, spec, caps, probe_files, proc = _inputs(cfg)
        fingerprint = _fingerprint(cfg, files)
        ensure_ray()
        previous, broken = _prepare_out(cfg, fingerprint)
        shard_dir = storage.join(cfg.out, SHARDS)
        before = Pool.open(shard_dir) if previous else None
        done = before.ids() if before else set()
        device = models.pick_device(cfg.device)
    if previous:
        log(f"resuming: {previous} activation shards already written ({len(done)} chunks), skipping them")
    log(f"reading {len(files)} file(s) from {len(set(f.source for f in files))} source(s); "
        f"{cfg.workers} activation worker(s) on {device}")
    skip_to = storage.join(cfg.out, SKIPPED) if cfg.skip_bad_files else None
    if skip_to:  # notes of an earlier run's reading are stale: this run reads every file again
        for uri in storage.list_files(skip_to):
            storage.delete(uri)
    budget, fractions = None, None
    if cfg.max_candidates is not None or cfg.sample_fraction is not None:
        with clock("budget"):
            budget = processing.candidate_budget(cfg.corpus_args(), files, skip_to)
        fractions = {s: b["fraction"] for s, b in budget["per_source"].items()}
        log("candidate budget: " + ", ".join(f"{s} {b['fraction']:.3g} of {b['documents']}"
                                             for s, b in budget["per_source"].items()))
    docs = ingest.read_documents(files, cfg.text_field, cfg.first_docs, proc.formatters, proc.qa_first, fractions,
                                 skip_to, proc.chat)
    with clock("near-dedup"):
        near_dups, documents = processing.near_duplicates(cfg.out, docs, proc, fingerprint)
    ledgers = [before.raw_ledger()] if before else []
    # Documents done / documents read by the near-dedup pass: every document leaves one `#0`
    # row in the ledger (packed sequences do not: there the bar counts chunks, with no total).
    by_docs = not proc.pack
    done_docs = _first_chunks(ledgers[0]) if before and by_docs else 0
    with clock("ingest+process+activations"), progress(
            "documents" if by_docs else "chunks embedded", " docs" if by_docs else " chunks",
            total=documents if by_docs else None, initial=done_docs) as bar:
        pipeline = build_pipeline(cfg, docs, done, device, proc, near_dups)
        for batch in pipeline.iter_batches(batch_format="pyarrow", batch_size=None):
            ledgers.append(batch.select([*RAW_LEDGER_COLUMNS, "shard"]))
            bar.update(_first_chunks(batch) if by_docs else int(pc.sum(pc.equal(batch.column("drop"), "")).as_py() or 0))
    new_rows = sum(t.num_rows for t in ledgers) - (ledgers[0].num_rows if before else 0)
    # the ledger the actors returned is the pool's ledger: no need to read it back from storage
    pool = Pool(storage.list_files(shard_dir, ".parquet"), ledger=pa.concat_tables(ledgers) if ledgers else None)
    log(f"embedded {len(pool)} chunks ({new_rows} rows new this run, {len(pool.shard_uris)} shards)")
    if len(pool) == 0:
        dropped = ", ".join(f"{r}={n}" for r, n in pool.counts()["dropped"].items()) or "no documents read"
        raise UserError(f"--corpus: no chunk survived processing (dropped: {dropped}); nothing to select")
    k = target_k(cfg.num_samples, len(pool), cfg.allow_fewer)
    quota = None
    if caps:
        with clock("probes"):
            probe_table = capabilities.embed_probes(
                probe_files, proc, device, fingerprint, out=cfg.out, text_field=cfg.text_field,
                coverage=cfg.coverage_args(), model=cfg.model_args(), processing=cfg.processing_args(),
                resources=cfg.resources_args())
        with clock("coverage"):
            quota = capabilities.allocate(cfg.model_args(), caps, probe_table, pool, k)
    extra = dict(device=device, resume={"shards_reused": previous, "rows_new": new_rows, "shards_set_aside": broken},
                 processing=processing.manifest_section(proc, near_dups,
                                                        processing.budget_section(budget, pool.counts()),
                                                        ingest.skipped_files(skip_to) if skip_to else None))
    stage1 = {}
    if quota:
        stage1 = dict(quotas=quota.plan.quotas, probe_pool=storage.join(cfg.out, capabilities.PROBE_SHARDS),
                      after=lambda selected: [capabilities.plot(cfg.out, quota, pool, selected)],
                      capabilities=lambda: capabilities.manifest_section(cfg.coverage_args(), caps, quota))
    return select_and_write(cfg, spec, pool, cfg.out, storage.join(cfg.out, "work", "selectors"), clock, **stage1,
                            **extra)


def _check_model(cfg: CurateConfig) -> None:
    """Config-level checks of --model, without loading weights: a decoder-only causal LM, with
    the --layers it is asked for and at least --seq-len positions (BOS included)."""
    model = cfg.model
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
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_layers = getattr(text_config, "num_hidden_layers", None)
    if n_layers:
        from cola_ray.models import parse_layers

        parse_layers(cfg.layers, n_layers)
    if cfg.min_tokens_per_expert:
        from cola_ray.stages.experts import config_experts

        if config_experts(config) is None:
            raise UserError(f"--min-tokens-per-expert {cfg.min_tokens_per_expert}: --model {model} is dense "
                            f"({', '.join(archs) or config.model_type}, no mixture-of-experts layers)")
    positions = getattr(text_config, "max_position_embeddings", None)
    if positions and cfg.seq_len + 1 > positions:
        raise UserError(f"--seq-len {cfg.seq_len}: longer than --model {model} can attend to "
                        f"({positions} positions, one of them for BOS)")
