"""Stage 1 wiring (COLA dataset selection): which capabilities, with which weights and probe
sets; probe and source profiles in the model's own activation space; the coverage matrix; and
how many of --num-samples each source receives (stage 3 clusters each source with its quota).

Profiles: a probe set's chunks go through the same ingest -> chunk -> ActivationExtractor steps
as the candidates (same model, layers, projection and seed, so both live in one space); a
source is represented by a seeded sample of its embedded chunks (about COVERAGE_SAMPLE, since
coverage compares sources on samples of similar size). Token-unigram counts come from
re-tokenizing those chunks' texts: shards keep text, not ids, and the counts only need the
distribution. The formulas are in stages/sources.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import probes, storage
from cola_ray.cache import Marker
from cola_ray.config import CoverageArgs, ModelArgs, ProcessingArgs, ResourcesArgs, split_list
from cola_ray.errors import UserError
from cola_ray.hashing import in_sample
from cola_ray.pool import Pool
from cola_ray.stages import cluster, ingest, process, runner, sources
from cola_ray.stages.base import FunctionStage
from cola_ray.workflows.common import log
from cola_ray.workflows.embedding import embed

PROBE_SHARDS = "work/probes"
COVERAGE_SAMPLE = 256  # chunks per source: plenty for a top-5 closeness and a unigram profile
ALPHA, MIN_COVERAGE, TEMPERATURE = 0.6, 0.1, 0.05  # sources.py's documented defaults


@dataclass
class CapabilityOptions:
    capabilities: list[str]
    weights: dict[str, float]
    probe_uris: dict[str, list[str]]
    builtin: dict[str, str] = field(default_factory=dict)  # capability -> built-in set used

    def probe_files(self) -> list[ingest.CorpusFile]:
        """Every probe file, labelled with its capability as its source."""
        out = []
        for cap, uris in self.probe_uris.items():
            for uri in uris:
                out += [dataclasses.replace(f, source=cap) for f in ingest.discover([uri], flag=f"--probes {cap}=")]
        return out


@dataclass
class QuotaResult:
    """Everything stage 1 decided, for stage 3, the manifest, the summary and the plot."""

    coverage: sources.Coverage
    activation: np.ndarray
    token: np.ndarray
    weights: dict[str, float]
    plan: sources.QuotaPlan
    samples: pa.Table  # id, source, vector: the source samples coverage was measured on
    probes: pa.Table  # id, source (= capability), vector


def parse_options(cfg: CoverageArgs) -> CapabilityOptions | None:
    """Stage-1 options, checked before anything heavy runs; None without --capabilities."""
    caps = split_list(cfg.capabilities)
    if not caps:
        given = [f"--{n}" for n, v in (("target", cfg.target), ("weights", cfg.weights), ("probes", cfg.probes))
                 if v] + (["--deployment targeted"] if cfg.deployment == "targeted" else [])
        if given:
            raise UserError(f"{given[0]}: needs --capabilities (the capabilities to curate for)")
        return None
    if len(set(caps)) < len(caps):
        raise UserError(f"--capabilities {','.join(caps)}: a capability is named twice")
    overrides = {}
    for item in split_list(cfg.weights):
        cap, _, value = item.partition("=")
        if cap not in caps:
            raise UserError(f"--weights {item}: unknown capability {cap!r} (--capabilities: {', '.join(caps)})")
        try:
            overrides[cap] = float(value)
        except ValueError:
            raise UserError(f"--weights {item}: expected CAP=WEIGHT with a number") from None
    if cfg.deployment == "general" and cfg.target:
        raise UserError(f"--target {cfg.target}: only used with --deployment targeted")
    if cfg.deployment == "targeted" and cfg.target not in caps:
        raise UserError(f"--target {cfg.target}: a targeted deployment needs one of --capabilities "
                        f"({', '.join(caps)})")
    weights = sources.capability_weights(caps, cfg.deployment, cfg.target, overrides)
    uris: dict[str, list[str]] = {}
    for item in cfg.probes:
        cap, _, uri = str(item).partition("=")
        if cap not in caps or not uri:
            raise UserError(f"--probes {item}: expected CAP=URI with CAP one of --capabilities ({', '.join(caps)})")
        uris.setdefault(cap, []).append(uri)
    builtin = {}
    for cap in caps:
        if cap not in uris:
            path = probes.builtin_probe_file(cap)
            if path is None:
                raise UserError(f"--capabilities {cap}: no probe set; pass --probes {cap}=FILE with texts typical "
                                f"of {cap} (built-in sets exist for {', '.join(probes.BUILTIN)})")
            uris[cap], builtin[cap] = [path], probes.BUILTIN[cap]
    return CapabilityOptions(caps, weights, uris, builtin)


def embed_probes(files: list[ingest.CorpusFile], proc, device: str, fingerprint: dict, *, out: str, text_field: str,
                 coverage: CoverageArgs, model: ModelArgs, processing: ProcessingArgs,
                 resources: ResourcesArgs) -> pa.Table:
    """Chunk and embed the probe sets like candidates (exact dedup, but no filters, near-dedup or
    packing: a probe set is taken as given). Their shards are reused while the candidates' settings (`fingerprint`)
    and the probe files stay the same, so rerunning with other weights costs no forward pass.
    Returns id, source (= capability), text, vector."""
    shard_dir = storage.join(out, PROBE_SHARDS)
    marker = Marker(storage.join(shard_dir, "_settings.json"))
    settings = {**fingerprint, "probes": [(f.source, f.uri) for f in files], "probe_max_docs": coverage.probe_max_docs}
    if not marker.matches(settings):
        storage.delete(shard_dir)
        docs = ingest.read_documents(files, text_field, coverage.probe_max_docs, proc.formatters, proc.qa_first,
                                     renderer=proc.chat)
        chunk = FunctionStage(process.chunk_batch, args=(model.model, processing.seq_len, processing.min_tokens),
                              batch_size=64)
        chunks = runner.run(docs, chunk)
        # A probe file may repeat a text: the pool resolves repeats as it does the candidates'.
        ledger = embed(chunks, model, resources, device, shard_dir, workers=1)
        for _ in ledger.iter_batches(batch_format="pyarrow", batch_size=None):
            pass
        marker.write(settings)
    table = Pool.open(shard_dir).read(["source", "text", "vector"])
    empty = sorted({f.source for f in files} - set(table.column("source").to_pylist()))
    if empty:
        raise UserError(f"--probes {empty[0]}=...: no probe text gave a chunk of at least --min-tokens "
                        f"{processing.min_tokens} tokens")
    return table


def source_samples(pool: Pool, seed: int) -> pa.Table:
    """A seeded sample of about COVERAGE_SAMPLE embedded chunks per source (id, source, text,
    vector), decided per id like k-means' training sample."""
    chosen = []
    for src, n in pool.source_counts().items():
        if n:
            ids = pool.only(src).read().column("id").to_pylist()
            chosen += [i for i, ok in zip(ids, in_sample(ids, min(1.0, COVERAGE_SAMPLE / n), seed)) if ok]
    return pool.read(["source", "text", "vector"], ids=chosen).select(["id", "source", "text", "vector"])


def _profiles(table: pa.Table, tokenizer) -> dict[str, sources.Profile]:
    vocab = len(tokenizer)
    out = {}
    for name in sorted(set(table.column("source").to_pylist())):
        rows = table.filter(pc.equal(table.column("source"), name))
        ids = tokenizer(rows.column("text").to_pylist(), add_special_tokens=False)["input_ids"]
        counts = np.bincount(np.concatenate([np.asarray(i, np.int64) for i in ids]), minlength=vocab)
        out[name] = sources.Profile(cluster.vectors_of(rows), counts[:vocab].astype(np.float64))
    return out


def allocate(cfg: ModelArgs, opts: CapabilityOptions, probe_table: pa.Table, pool: Pool, k: int) -> QuotaResult:
    """Coverage of every source for every capability, and each source's share of k."""
    from cola_ray.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    samples = source_samples(pool, cfg.seed)
    src_profiles = _profiles(samples, tokenizer)
    by_capability = _profiles(probe_table, tokenizer)
    cap_profiles = {c: by_capability[c] for c in opts.capabilities}
    # centering on the pool's mean needs a pool: one source against one capability would come
    # out as opposites (sources.py)
    center = len(src_profiles) + len(cap_profiles) > 2
    cov = sources.coverage_matrix(src_profiles, cap_profiles, alpha=ALPHA, center=center, vocab_size=len(tokenizer))
    act = sources.coverage_matrix(src_profiles, cap_profiles, alpha=1.0, center=center).matrix
    tok = sources.token_similarity(np.stack([p.token_counts for p in src_profiles.values()]),
                                   np.stack([p.token_counts for p in cap_profiles.values()]))
    counts = pool.source_counts()
    available = {s: counts.get(s, 0) for s in cov.sources}
    plan = sources.allocate_quotas(cov, opts.weights, k, available, MIN_COVERAGE, TEMPERATURE)
    for s in counts:  # sources with no embedded chunk never had a profile
        if s not in plan.quotas:
            plan.quotas[s] = 0
            plan.excluded[s] = "no chunk survived processing"
    for s, q in plan.quotas.items():
        if q == 0:
            log(f"source {s} gets no calibration samples: "
                + plan.excluded.get(s, "other sources cover its capabilities better"))
    for c in plan.uncovered:
        log(f"capability {c}: no source covers it above min_coverage={MIN_COVERAGE}; its weight went to the others")
    return QuotaResult(cov, act, tok, opts.weights, plan, samples.select(["id", "source", "vector"]),
                       probe_table.select(["id", "source", "vector"]))


def manifest_section(cfg: CoverageArgs, opts: CapabilityOptions, res: QuotaResult) -> dict:
    def table(m):
        return {s: {c: round(float(m[i, j]), 4) for j, c in enumerate(res.coverage.capabilities)}
                for i, s in enumerate(res.coverage.sources)}

    probe_chunks = res.probes.column("source").to_pylist()
    sample_sources = res.samples.column("source").to_pylist()
    return {
        "capabilities": opts.capabilities, "deployment": cfg.deployment, "target": cfg.target,
        "weights": res.weights,
        "probes": {c: {"uris": opts.probe_uris[c], "builtin": opts.builtin.get(c),
                       "chunks": probe_chunks.count(c)} for c in opts.capabilities},
        "coverage": table(res.coverage.matrix),
        "activation_similarity": table(res.activation),
        "token_similarity": table(res.token),
        "sample_chunks": {s: sample_sources.count(s) for s in res.coverage.sources},
        "quotas": res.plan.quotas, "excluded": res.plan.excluded, "uncovered": res.plan.uncovered,
        "params": {"alpha": ALPHA, "min_coverage": MIN_COVERAGE, "temperature": TEMPERATURE,
                   "coverage_sample": COVERAGE_SAMPLE},
    }


def plot(out: str, res: QuotaResult, pool: Pool, selected: pa.Table) -> str:
    """activation_space.png under `out`: candidates (the coverage samples), probes and the
    selected chunks in a 2-D PCA of the projected activation space."""
    from cola_ray.report import activation_space_png

    chosen = pool.read(["source", "vector"], ids=selected.column("id").to_pylist())
    png = activation_space_png(
        (cluster.vectors_of(res.samples), res.samples.column("source").to_pylist()),
        (cluster.vectors_of(res.probes), res.probes.column("source").to_pylist()),
        (cluster.vectors_of(chosen), chosen.column("source").to_pylist()))
    storage.write_bytes(storage.join(out, "activation_space.png"), png)
    return "activation_space.png"
