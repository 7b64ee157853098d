"""`cola-ray curate`'s options: one flat config (every flag a field, YAML takes the same keys), cut
into argument groups (groups.py) that the code using them receives instead of the whole config."""

from __future__ import annotations

from dataclasses import dataclass

from cola_ray.config.fields import YamlDict, check_choices, opt, split_list
from cola_ray.config.groups import (CorpusArgs, CoverageArgs, ModelArgs, ProcessingArgs, ResourcesArgs,
                                    SelectionArgs, cut)
from cola_ray.errors import UserError


@dataclass
class CurateConfig:
    model: str | None = opt(None, "local HF model folder or hub id (default: the offline demo model)")
    corpus: list[str] = opt([], "file, folder or glob of .jsonl/.jsonl.gz/.json/.parquet/.txt or a "
                            "datasets save_to_disk folder, local or s3://, or a Hugging Face dataset "
                            "hf://datasets/ORG/NAME[@revision][/config][:split] (offline: COLA_RAY_HF_MIRROR); "
                            "repeatable")
    out: str | None = opt(None, "output folder or s3://bucket/prefix (default: runs/<name>)")
    num_samples: int = opt(128, "calibration samples to select (= k of k-means)")
    seq_len: int = opt(2048, "maximum tokens per chunk; longer documents are split")
    min_tokens: int = opt(32, "drop chunks shorter than this many tokens")
    text_field: str = opt("text", "field holding the text in json/parquet/datasets records")
    layers: str = opt("all", "decoder layers to pool: 'all', a list like '0,4,8', or '-1'")
    proj_dim: int = opt(64, "dimension of the seeded Gaussian random projection")
    seed: int = opt(0, "seed for projection, k-means and sampling")
    stat_layers: int = opt(4, "decoder layers (evenly spaced among --layers) whose Linear-layer inputs get per-chunk "
                           "statistics in the same pass (channel moments, outlier channels, a Hessian sketch: "
                           "what `cola-ray score` and the compressor-aware selectors read); 0: none")
    workers: int = opt(1, "activation actors (one GPU each on CUDA machines)")
    batch_size: int = opt(8, "chunks per forward pass (chunks of similar length are batched)")
    device: str = opt("auto", "where activation actors run", ("auto", "cpu", "cuda"))
    dtype: str = opt("auto", "model dtype (auto: bfloat16 on CUDA, float32 on CPU)",
                     ("auto", "float32", "bfloat16", "float16"))
    first_docs: int | None = opt(None, "read only the first N documents of each --corpus, in file order (a quick "
                                 "look, biased toward the head of each file; for a uniform sample use "
                                 "--max-candidates or --sample-fraction)", aliases=("max_docs",))
    max_candidates: int | None = opt(None, "candidate budget: embed about N documents in all, a uniform sample by "
                                     "document-id hash decided before tokenization; split over sources by "
                                     "water-filling (equal shares; a source smaller than its share is kept whole "
                                     "and the rest goes to the others), so every source keeps candidates for "
                                     "stage-1 quotas. Approximate (a hash threshold); costs one counting pass")
    sample_fraction: float | None = opt(None, "candidate budget: embed about this fraction of every source's "
                                        "documents (uniform by document-id hash, decided before tokenization)")
    chat_template: str = opt("auto", "how records with `messages` ({role, content}) or `conversations` ({from, "
                             "value}) are rendered: auto (the model's chat template; an error if it has none), "
                             "none (plain 'role: content' text), or a Jinja template FILE")
    enable_thinking: str = opt("auto", "passed to chat templates that read it (Qwen3-style thinking mode): true, "
                               "false, or auto (not passed: the template's default). Calibrate in the mode the "
                               "model is deployed in", ("auto", "true", "false"))
    qa_chat: bool = opt(False, "render Q&A records (see --qa-format) as a user turn (question, context) and an "
                        "assistant turn (reasoning, answer) through the chat template, instead of the Q&A template's "
                        "plain text: for instruct models")
    strict: bool = opt(False, "a malformed conversation record (not a list, empty, an unknown role, a turn that is "
                       "not {role, content}, one the template refuses) stops the run with one line naming the file "
                       "and the reason, instead of being dropped and counted as bad_conversation:<reason>")
    skip_bad_files: bool = opt(False, "a file found corrupt partway (a cut .gz, a JSON line that is not an "
                               "object, a parquet row group that does not decode) ends there instead of failing the run: the records before the damage are "
                               "kept, and the file, line and reason are listed in the manifest and the summary")
    # stage 2: processing
    filters: list[str] = opt([], "quality-filter thresholds NAME=VALUE, comma-separated or repeatable (min_chars, "
                             "max_symbol_ratio, max_digit_ratio, max_duplicate_line_ratio, top_ngram_size, "
                             "max_top_ngram_ratio, max_replacement_char_ratio, max_mojibake_ratio; defaults in "
                             "stages/filters.py), or 'off' to keep every document")
    near_dup_threshold: float = opt(0.8, "drop a document whose estimated Jaccard similarity (MinHash of word "
                                    "5-grams) with an earlier one reaches this; 0 turns near-dedup off")
    pack: bool = opt(False, "concatenate consecutive documents of a source (EOS between them) into sequences of "
                     "up to --seq-len tokens, instead of dropping short ones")
    qa_format: bool = opt(False, "render records that have question/answer fields as Q&A with a reasoning "
                          "section even when they have a text field (records without one always are)")
    qa_template: str | None = opt(None, "Q&A template: {question} {context} {reasoning} {answer} or any record "
                                  "field, \\n for a line break (default: Question/Reasoning/Answer lines)")
    qa_fields: list[str] = opt([], "Q&A field mapping of one source (a --corpus label or a capability's probe "
                               "set): SOURCE=ROLE:FIELD,... with roles question, context, reasoning, answer; "
                               "repeatable")
    # stage 1: source selection for a deployment
    capabilities: list[str] = opt([], "capabilities the compressed model must keep (e.g. general,code): sources "
                                  "get sample quotas from their coverage of them; comma-separated or repeatable")
    deployment: str = opt("general", "general: equal capability weights; targeted: --target weighs 1.0 and "
                          "the others 0.2", ("general", "targeted"))
    target: str | None = opt(None, "the capability of a targeted deployment")
    weights: list[str] = opt([], "capability weight overrides CAP=W, comma-separated or repeatable")
    probes: list[str] = opt([], "probe set of a capability, CAP=URI (same formats as --corpus); repeatable; "
                            "built-in sets: general, code")
    probe_max_docs: int = opt(64, "read at most N documents from each probe set")
    allow_fewer: bool = opt(False, "select every candidate when there are fewer than --num-samples")
    min_tokens_per_expert: int = opt(0, "MoE models: after the selector, swap chunks (within the quotas, keeping "
                                     "exactly --num-samples) until every expert of every MoE layer that the pool "
                                     "reaches gets at least N calibration tokens; 0: off")
    allow_more: bool = opt(False, "with --min-tokens-per-expert: add chunks instead of swapping (the selector's "
                           "choice is kept; the summary and manifest say how far k grew)")
    shard_size: int = opt(64, "chunks per activation shard (the unit of resume after a crash)")
    kmeans_iters: int = opt(25, "k-means iterations per restart")
    kmeans_restarts: int = opt(3, "k-means restarts; the lowest objective is kept")
    kmeans_points_per_centroid: int = opt(256, "train k-means on at most k*N sampled vectors")
    kmeans_mode: str = opt("local", "local: FAISS on the driver; distributed: Lloyd over Ray "
                           "actors holding shards of the vectors", ("local", "distributed"))
    selector: str = opt("cola", "how the calibration set is chosen from the embedded chunks: cola (k-means "
                        "on activations), random, random-stratified, lexical, perplexity[-low|-high]; with "
                        "--capabilities, every selector draws each source's quota")
    selector_params: YamlDict = opt({}, "parameters of the selector, {name: value} (cola's are also flags: "
                                    "--kmeans-iters, --kmeans-restarts, --kmeans-points-per-centroid, --kmeans-mode)")
    config: str | None = opt(None, "YAML file with any of these options (flags override it)")

    # -- argument groups: what each part of the run receives (groups.py) ----------------------

    def model_args(self) -> ModelArgs:
        return cut(ModelArgs, self)

    def corpus_args(self) -> CorpusArgs:
        return cut(CorpusArgs, self)

    def processing_args(self) -> ProcessingArgs:
        return cut(ProcessingArgs, self)

    def coverage_args(self) -> CoverageArgs:
        return cut(CoverageArgs, self)

    def resources_args(self) -> ResourcesArgs:
        return cut(ResourcesArgs, self)

    def selection_args(self) -> SelectionArgs:
        """The selection group: what the selection layer and the selector get, nothing more."""
        return SelectionArgs(self.selector, self.num_samples, self.seed, self.allow_fewer,
                             min_tokens_per_expert=self.min_tokens_per_expert, allow_more=self.allow_more,
                             flag_params={"kmeans_iters": self.kmeans_iters, "kmeans_restarts": self.kmeans_restarts,
                                          "kmeans_points_per_centroid": self.kmeans_points_per_centroid,
                                          "kmeans_mode": self.kmeans_mode},
                             params=dict(YamlDict(self.selector_params)))

    def validate(self) -> "CurateConfig":
        """Ranges and choices; names of plug-ins (selectors) are checked by the workflow, which
        knows the registries (config imports none)."""
        self.selector_params = YamlDict(self.selector_params)
        checks = [
            ("num_samples", self.num_samples >= 1), ("seq_len", self.seq_len >= 8),
            ("min_tokens", 1 <= self.min_tokens <= self.seq_len), ("proj_dim", self.proj_dim >= 1),
            ("stat_layers", self.stat_layers >= 0), ("workers", self.workers >= 1), ("batch_size", self.batch_size >= 1),
            ("shard_size", self.shard_size >= 1), ("kmeans_iters", self.kmeans_iters >= 1),
            ("kmeans_restarts", self.kmeans_restarts >= 1),
            ("first_docs", self.first_docs is None or self.first_docs >= 1),
            ("max_candidates", self.max_candidates is None or self.max_candidates >= 1),
            ("sample_fraction", self.sample_fraction is None or 0.0 < self.sample_fraction <= 1.0),
            ("near_dup_threshold", 0.0 <= self.near_dup_threshold <= 1.0),
            ("probe_max_docs", self.probe_max_docs >= 1), ("min_tokens_per_expert", self.min_tokens_per_expert >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: out of range")
        if self.max_candidates is not None and self.sample_fraction is not None:
            raise UserError("--max-candidates and --sample-fraction: give one candidate budget, not both")
        if self.allow_more and not self.min_tokens_per_expert:
            raise UserError("--allow-more: only with --min-tokens-per-expert N (N >= 1)")
        check_choices(self)
        # comma-separated or repeated: the manifest records them one per item
        self.capabilities, self.weights, self.filters = split_list(self.capabilities), split_list(self.weights), split_list(self.filters)
        return self
