"""Stage 2 wiring (COLA dataset processing): the processing options of a curate run, the Q&A
renderers handed to ingest, and the corpus-wide near-duplicate pass.

Near-dedup is on by default (threshold 0.8): a calibration set has one sample per activation
cluster, so a mirrored or lightly edited copy wastes a cluster and pulls the centroids toward
whatever is copied most, and real corpora (web, forums, Q&A dumps) are full of such copies. It
costs one extra streaming read of the text and a shuffle of small signatures, little next to
the forward passes. `--near-dup-threshold 0` turns it off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.cache import cached_json
from cola_ray.config import CorpusArgs, ProcessingArgs, split_list
from cola_ray.errors import UserError
from cola_ray.stages import neardup, process, runner
from cola_ray.stages.base import FunctionStage
from cola_ray.stages.filters import FilterConfig
from cola_ray.stages.chat import ChatRenderer, resolve_template
from cola_ray.stages.formatting import DEFAULT_TEMPLATE, QAFormatter
from cola_ray.workflows.common import log

NEAR_DUPS = "work/near_duplicates.json"
NEAR_DUP_SIGNATURES = "work/near-dedup-signatures"  # MinHash signatures while the pass runs (removed after)
_OFF = ("off", "false", "no", "none")  # YAML reads a bare `off` as false


@dataclass(frozen=True)
class Processing:
    quality: FilterConfig | None
    near_dup_threshold: float
    pack: bool
    template: str = DEFAULT_TEMPLATE
    formatters: dict[str, QAFormatter] = field(default_factory=dict)
    qa_first: frozenset[str] = frozenset()
    chat: ChatRenderer | None = None  # renders conversation records (stages/chat.py)


def parse_filters(values: list[str]) -> FilterConfig | None:
    """['min_chars=50,max_digit_ratio=0.5'] -> FilterConfig; ['off'] -> None."""
    items = split_list(values)
    if any(v.lower() in _OFF for v in items):
        if len(items) > 1:
            raise UserError(f"--filters {','.join(items)}: 'off' cannot be combined with thresholds")
        return None
    known = {f.name: f.type for f in dataclasses.fields(FilterConfig)}
    settings = {}
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in known or not value:
            raise UserError(f"--filters {item}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            settings[name] = int(value) if known[name] in (int, "int") else float(value)
        except ValueError:
            raise UserError(f"--filters {item}: {value!r} is not a number") from None
    return FilterConfig(**settings)


def parse_qa_fields(values: list[str]) -> dict[str, dict[str, str]]:
    """['mathqa=question:Problem,answer:correct'] -> {'mathqa': {'question': 'Problem', ...}}."""
    out: dict[str, dict[str, str]] = {}
    for entry in values:
        source, _, mapping = str(entry).partition("=")
        pairs = [p.partition(":") for p in mapping.split(",") if p.strip()]
        if not source.strip() or not pairs or any(not role.strip() or not name.strip() for role, _, name in pairs):
            raise UserError(f"--qa-fields {entry}: expected SOURCE=ROLE:FIELD[,ROLE:FIELD...]")
        out.setdefault(source.strip(), {}).update({role.strip(): name.strip() for role, _, name in pairs})
    return out


def processing_options(cfg: ProcessingArgs, model: str, text_field: str, labels: Iterable[str]) -> Processing:
    """The stage-2 settings of a run for `model` (its chat template renders conversations);
    `labels`: every source label that will be read (corpus sources and probe sets), each getting
    its own Q&A renderer reading records' `text_field`."""
    labels = sorted(set(labels))
    mapping = parse_qa_fields(cfg.qa_fields)
    unknown = sorted(set(mapping) - set(labels))
    if unknown:
        raise UserError(f"--qa-fields {unknown[0]}=...: no source or probe set {unknown[0]!r} "
                        f"(sources: {', '.join(labels)})")
    # a template from the command line writes line breaks as \n
    template = (cfg.qa_template or DEFAULT_TEMPLATE).replace("\\n", "\n")
    formatters = {s: QAFormatter(template, mapping.get(s), source=s, text_field=text_field) for s in labels}
    qa_first = frozenset(labels if cfg.qa_format else mapping)
    thinking = {"auto": None, "true": True, "false": False}[str(cfg.enable_thinking).lower()]
    renderer = ChatRenderer(model, cfg.seq_len, resolve_template(cfg.chat_template), thinking, bool(cfg.qa_chat),
                            bool(cfg.strict))
    return Processing(parse_filters(cfg.filters), cfg.near_dup_threshold, cfg.pack, template, formatters, qa_first,
                      renderer)


def find_near_duplicates(docs, proc: Processing, folder: str) -> tuple[dict[str, str], int]:
    """(doc_id -> 'near_duplicate' | 'duplicate' over the whole corpus, the number of documents
    read), by neardup.py's steps on Ray Data: signatures per batch, written under `folder`; one
    (bucket, id) row per LSH band, grouped by bucket into candidate pairs; the candidates'
    signatures read back and verified on the driver. `folder` is emptied first and removed at
    the end. The document count (every document read, kept or not) gives the main pass's
    progress bar its total."""
    threshold = proc.near_dup_threshold
    storage.delete(folder)  # an interrupted run's signatures: this run writes its own
    survivors = runner.run(docs, FunctionStage(_counted_survivors, args=(proc.quality,), batch_size=64))
    # Materialised before the shuffle (which is a barrier anyway): its count and document total
    # are then free, and an empty corpus skips the shuffle.
    buckets = runner.run(survivors, FunctionStage(neardup.band_rows, args=(threshold, folder))).materialize()
    try:
        if buckets.count() == 0:
            return {}, 0
        documents = int(buckets.sum("documents") or 0)
        pairs: set[tuple[str, str]] = set()
        for batch in candidate_pairs(buckets).iter_batches(batch_format="pyarrow", batch_size=None):
            pairs.update(zip(batch.column("a").to_pylist(), batch.column("b").to_pylist()))
        if not pairs:
            return {}, documents
        wanted = pa.array(sorted({i for pair in pairs for i in pair}), pa.string())
        signatures = storage.read_parquet(storage.list_files(folder, ".parquet"), ["id", "key", "signature"],
                                          filter=pc.field("id").isin(wanted))
        return neardup.drop_reasons(neardup.verify_pairs(pairs, signatures, threshold)), documents
    finally:
        storage.delete(folder)


def candidate_pairs(buckets):
    """The (a, b) candidate pairs of the band rows: every two ids that share an LSH bucket."""
    return runner.run_grouped(buckets, "bucket", FunctionStage(neardup.bucket_candidates))


def _counted_survivors(batch: pa.Table, quality) -> pa.Table:
    """process.surviving_documents plus `documents`: the batch's document count on its first
    row (a batch with no survivor becomes one row with an empty doc_id that only counts)."""
    out = process.surviving_documents(batch, quality)
    if out.num_rows == 0:
        return pa.table({"doc_id": [""], "text": [""], "key": [""], "documents": pa.array([batch.num_rows], pa.int64())})
    counts = [batch.num_rows] + [0] * (out.num_rows - 1)
    return out.append_column("documents", pa.array(counts, pa.int64()))


def near_duplicates(out: str, docs, proc: Processing, fingerprint: dict) -> tuple[dict[str, str], int | None]:
    """find_near_duplicates, remembered under `out` (--out): a resumed run must not pay for it twice.
    (verdicts, documents read; None when unknown: near-dedup off, or a cache of an older run)."""
    if proc.near_dup_threshold <= 0:
        return {}, None

    def compute() -> dict:
        drops, documents = find_near_duplicates(docs, proc, storage.join(out, NEAR_DUP_SIGNATURES))
        log(f"near-dedup: {len(drops)} of {documents} document(s) to drop (threshold {proc.near_dup_threshold})")
        return {"drops": drops, "documents": documents}

    value = cached_json(storage.join(out, NEAR_DUPS), fingerprint, compute)
    if "drops" not in value:  # an older run's cache: the verdicts alone (doc ids never read "drops")
        return value, None
    return value["drops"], value["documents"]


def water_fill(counts: dict[str, int], total: int) -> dict[str, float]:
    """Split `total` over sources: equal shares, a source smaller than its share keeps all it has
    and the rest is shared by the others (every source keeps candidates; the largest pays)."""
    left, out = float(total), {}
    order = sorted(counts, key=lambda s: (counts[s], s))
    for i, source in enumerate(order):
        out[source] = min(float(counts[source]), left / (len(order) - i))
        left -= out[source]
    return dict(sorted(out.items()))


def candidate_budget(cfg: CorpusArgs, files, skip_to: str | None = None) -> dict | None:
    """The candidate budget of a run that has one: per source, its documents and the share of
    them to embed, decided before tokenization (ingest.in_budget). The documents are counted
    for either flag (--sample-fraction needs them only for the manifest's skipped counts)."""
    from cola_ray.stages import ingest

    counts = ingest.count_documents(files, skip_to)
    if cfg.sample_fraction is not None:
        fractions = {s: cfg.sample_fraction for s in counts}
    else:
        shares = water_fill(counts, cfg.max_candidates)
        fractions = {s: min(1.0, shares[s] / n) if n else 1.0 for s, n in counts.items()}
    return {"max_candidates": cfg.max_candidates, "sample_fraction": cfg.sample_fraction,
            "rule": "uniform by document-id hash, per source (approximate: a hash threshold)",
            "per_source": {s: {"documents": n, "fraction": round(fractions[s], 6)} for s, n in counts.items()}}


def budget_section(budget: dict | None, counts: dict) -> dict | None:
    """The budget for the manifest, with the documents it kept (read into chunking) and skipped."""
    if budget is None:
        return None
    per = {}
    for s, b in budget["per_source"].items():
        kept = counts["per_source"].get(s, {}).get("documents", 0)
        per[s] = {**b, "kept": kept, "skipped": max(0, b["documents"] - kept)}
    return {**budget, "per_source": per, "kept": sum(v["kept"] for v in per.values()),
            "skipped": sum(v["skipped"] for v in per.values())}


def manifest_section(proc: Processing, drops: dict[str, str], budget: dict | None = None,
                     skipped_files: list[dict] | None = None) -> dict:
    return {
        "budget": budget,
        "skipped_files": skipped_files,  # None: --skip-bad-files off (a corrupt file fails the run)
        "filters": dataclasses.asdict(proc.quality) if proc.quality is not None else "off",
        "near_dup": ({"threshold": proc.near_dup_threshold, "documents": len(drops)}
                     if proc.near_dup_threshold > 0 else "off"),
        "pack": proc.pack,
        "chat": ({"template": "model's own" if proc.chat.template is None else
                  ("none" if proc.chat.template == "none" else "file"),
                  "enable_thinking": proc.chat.enable_thinking, "qa_as_chat": proc.chat.qa} if proc.chat else None),
        "qa": {"template": proc.template, "fields": {s: f.fields for s, f in proc.formatters.items() if f.fields},
               "qa_first": sorted(proc.qa_first)},
    }
