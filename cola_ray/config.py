"""Typed configs shared by the CLI, YAML files and the Python API.

Each field's `help` metadata is the documentation: the CLI builds its flags from it, so a new
option is one new field. Precedence: field default < YAML file < command-line flag.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from cola_ray.errors import UserError


def opt(default: Any = None, help: str = "", choices: tuple | None = None, aliases: tuple[str, ...] = (),
        **kw) -> Any:
    """A config field; `aliases`: former names, still accepted as flags and YAML keys."""
    meta = {"help": help, "choices": choices, "aliases": aliases}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def check_choices(config) -> None:
    """Every option with `choices` holds one of them."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise UserError(f"--{f.name.replace('_', '-')} {getattr(config, f.name)!r}: "
                            f"expected one of {', '.join(choices)}")


class YamlDict(dict):
    """A mapping option: a YAML mapping in the config file, or YAML/JSON text on the command line
    (`--recipe-params '{gptq-w4a16: {group_size: 64}}'`)."""

    def __init__(self, value=None):
        if isinstance(value, str):
            import yaml

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ValueError(f"invalid YAML: {str(e).splitlines()[0]}") from None
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {value!r}")
        super().__init__(value or {})  # a dict, or (key, value) pairs (dataclasses.asdict)


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

    def selection_args(self) -> "SelectionArgs":
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
        self.capabilities, self.weights, self.filters = _split(self.capabilities), _split(self.weights), _split(self.filters)
        return self


def _split(values: list[str]) -> list[str]:
    """['cola,random', 'lexical'] -> ['cola', 'random', 'lexical'] (flags may list several)."""
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


@dataclass(frozen=True)
class SelectionArgs:
    """Argument group of the selection: the selector, k, the seed, and the selector's own
    parameters: `params` from --selector-params (checked strictly against what the selector
    declares), `flag_params` from the flags that exist for a selector's parameters (cola's
    k-means flags), passed to any selector that declares a parameter of that name."""

    selector: str
    num_samples: int
    seed: int
    allow_fewer: bool
    flag_params: dict
    params: dict
    min_tokens_per_expert: int = 0  # MoE expert coverage (selectors/experts.py)
    allow_more: bool = False

    def params_for(self, spec) -> dict:
        return {**{k: v for k, v in self.flag_params.items() if k in spec.param_names}, **self.params}


# CurateConfig options a sweep sets itself (per trial) rather than taking from its `curate:` block.
SWEEP_OWNS = ("model", "out", "seed", "selector", "config")


@dataclass
class SweepConfig:
    model: str | None = opt(None, "HF causal LM to curate for, compress and evaluate (default: the offline demo "
                            "model)")
    out: str | None = opt(None, "output folder or s3://bucket/prefix (default: runs/sweep-<time>); a rerun with "
                          "the same --out skips finished trials")
    selectors: list[str] = opt(["cola", "random"], "selectors to build a calibration set with, once per seed "
                               "(repeatable or comma-separated)")
    calibration_sets: list[str] = opt([], "existing calibration sets to compare as well: folders (local or "
                                      "s3://) holding a calibration.jsonl, or .jsonl files; repeatable; "
                                      "one that does not exist is refused before any trial")
    recipes: list[str] = opt(["wanda-50", "gptq-w4a16"], "compression recipes from cola_ray.compress "
                             "(repeatable or comma-separated)")
    recipe_params: YamlDict = opt({}, "per-recipe parameter overrides, {recipe: {param: value}}")
    seeds: list[str] = opt(["0"], "seeds: curate's projection and k-means, the random selectors (e.g. 0,1,2)")
    suites: list[str] = opt(["ppl-wiki", "ppl-news", "ppl-code", "humaneval-ll"], "evaluation suites from "
                            "cola_ray.evaluate, or lm-eval task names (repeatable or comma-separated)")
    eval_limit: int | None = opt(None, "documents (problems) per evaluation task (default: all)")
    eval_batch_size: int = opt(8, "lm-eval batch size")
    eval_backend: str = opt("hf", "lm-eval model backend (vllm: CUDA machines only)", ("hf", "vllm"))
    curate: YamlDict = opt({}, "`cola-ray curate` options shared by every trial (corpus, num_samples, seq_len, "
                           "first_docs, max_candidates, workers, ...; not model/out/seed/selector)")
    shared_pool: bool = opt(False, "curate one pool (the first seed's activations) and apply every selector with "
                            "every seed to it: one activation pass instead of one per seed; the seeds then vary "
                            "k-means and sampling but not COLA's random projection")
    save_models: bool = opt(False, "save every compressed model (compressed-tensors format) under "
                            "<out>/models/<trial>")
    trial_cpus: int = opt(1, "CPUs per trial; torch in the trial uses this many threads")
    trial_gpus: float | None = opt(None, "GPUs per trial (default: 1 when the cluster has GPUs, else 0)")
    max_concurrent: int | None = opt(None, "trials running at once (default: as many as resources allow)")
    device: str = opt("auto", "where trials compress and evaluate", ("auto", "cpu", "cuda"))
    dtype: str = opt("auto", "model dtype in trials (auto: bfloat16 on CUDA, float32 on CPU)",
                     ("auto", "float32", "bfloat16", "float16"))
    storage: str | None = opt(None, "Ray Tune's storage_path, local or s3:// (default: <out>/tune)")
    report_only: bool = opt(False, "run nothing: rebuild the table, report and plots from the trials already "
                            "finished (the others are listed as missing)")
    proxies: list[str] = opt(["coverage", "moments"], "`cola-ray score` proxies recorded next to every trial's "
                             "measured scores (proxy:* columns of results.csv; the curate capabilities' probes, or "
                             "general and code); `layer` adds one forward pass a set; 'none' turns scoring off")
    config: str | None = opt(None, "YAML file with any of these options (flags override it)")

    def validate(self) -> "SweepConfig":
        self.selectors, self.recipes, self.suites = _split(self.selectors), _split(self.recipes), _split(self.suites)
        self.proxies = [p for p in _split(self.proxies) if p.lower() not in ("none", "off", "false")]
        unknown = [p for p in self.proxies if p not in PROXIES]
        if unknown:
            raise UserError(f"--proxies {unknown[0]}: expected some of {', '.join(PROXIES)}, or none")
        try:
            self.seeds = [str(int(s)) for s in _split(self.seeds)]
        except ValueError:
            raise UserError(f"--seeds {self.seeds}: expected integers") from None
        self.recipe_params, self.curate = YamlDict(self.recipe_params), YamlDict(self.curate)
        checks = [("selectors", bool(self.selectors or self.calibration_sets)), ("recipes", bool(self.recipes)),
                  ("suites", bool(self.suites)), ("seeds", bool(self.seeds) or not self.selectors),
                  ("eval_limit", self.eval_limit is None or self.eval_limit >= 1),
                  ("eval_batch_size", self.eval_batch_size >= 1), ("trial_cpus", self.trial_cpus >= 1),
                  ("trial_gpus", self.trial_gpus is None or self.trial_gpus >= 0),
                  ("max_concurrent", self.max_concurrent is None or self.max_concurrent >= 1)]
        for name, ok in checks:
            if not ok:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: out of range or empty")
        known = {f.name for f in dataclasses.fields(CurateConfig)}
        for key in self.curate:
            if field_name(CurateConfig, key) in SWEEP_OWNS or field_name(CurateConfig, key) not in known:
                raise UserError(f"--curate: {key!r} is not a curate option a sweep shares "
                                f"(the sweep sets {', '.join(SWEEP_OWNS)} itself)")
        for name, params in self.recipe_params.items():
            if not isinstance(params, dict):
                raise UserError(f"--recipe-params: {name!r} must map to parameters, e.g. {{group_size: 64}}")
        check_choices(self)
        return self


def load_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"--config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    return data


def base_type(hint):
    """`int | None` -> int; `list[str]` stays list[str]."""
    if get_origin(hint) is list:
        return hint
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(cls, name: str, value: Any, source: str) -> Any:
    kind = base_type(get_type_hints(cls)[name])
    if value is None:
        return None
    if get_origin(kind) is list:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if kind is str:
        return str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{source}: {name}={value!r} is not true/false")
    if kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: {name}={value!r} is not a {kind.__name__}") from None
    return value


def field_name(cls, key: str) -> str:
    """A flag or YAML key ('max-docs', 'max_docs') -> the field it sets (aliases resolved)."""
    key = key.replace("-", "_")
    for f in dataclasses.fields(cls):
        if key in f.metadata.get("aliases", ()):
            return f.name
    return key


def build_config(cls, yaml_path: str | None = None, overrides: dict | None = None):
    """Defaults < YAML < overrides (only keys whose value is not None)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path:
        for key, value in load_yaml(yaml_path).items():
            key = field_name(cls, str(key))
            if key not in names:
                raise UserError(f"--config {yaml_path}: unknown option {key!r}")
            values[key] = _coerce(cls, key, value, f"--config {yaml_path}")
        values["config"] = yaml_path
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(cls, key, value, "command line")
    return cls(**values)


PROXIES = ("coverage", "moments", "layer")


@dataclass
class ScoreConfig:
    model: str | None = opt(None, "the uncompressed HF causal LM the sets are for (default: the offline demo model)")
    calibration: list[str] = opt([], "a calibration set: a .jsonl with a `text` field (e.g. calibration.jsonl, "
                                 "or an llm-compressor dataset exported to jsonl) or a curate output folder, "
                                 "local or s3://; repeatable")
    out: str | None = opt(None, "output folder or s3://bucket/prefix (default: runs/score-<time>)")
    capabilities: list[str] = opt(["general", "code"], "capabilities to score for (comma-separated or repeatable)")
    probes: list[str] = opt([], "probe set of a capability, CAP=URI (held-out texts, never from the pool being "
                            "scored); repeatable; built-in sets: general, code")
    recipes: list[str] = opt(["wanda-50", "sparsegpt-50", "gptq-w4a16"], "recipes whose layer-wise compression "
                             "error to predict (Wanda, SparseGPT and GPTQ families; repeatable or comma-separated)")
    recipe_params: YamlDict = opt({"gptq-w4a16": {"group_size": 64}}, "per-recipe parameter overrides, "
                                  "{recipe: {param: value}}")
    proxies: list[str] = opt(list(PROXIES), "proxies to compute: coverage, moments (statistics match), layer "
                             "(layer-wise compression error: one forward pass per set)")
    seq_len: int = opt(2048, "tokens per calibration text (longer ones are cut, and counted)")
    min_tokens: int = opt(32, "probe texts: drop chunks shorter than this many tokens")
    layers: str = opt("all", "decoder layers pooled into the activation vectors (as curate's --layers)")
    proj_dim: int = opt(64, "dimension of the random projection (as curate's)")
    seed: int = opt(0, "seed of the projection and the sketches (as curate's)")
    stat_layers: int = opt(4, "decoder layers whose Linear inputs are measured (as curate's --stat-layers)")
    probe_max_docs: int = opt(64, "read at most N documents from each probe set")
    workers: int = opt(1, "scoring actors (one model each; one GPU each on CUDA machines)")
    batch_size: int = opt(8, "texts per forward pass")
    device: str = opt("auto", "where the actors run", ("auto", "cpu", "cuda"))
    dtype: str = opt("auto", "model dtype (auto: bfloat16 on CUDA, float32 on CPU)",
                     ("auto", "float32", "bfloat16", "float16"))
    config: str | None = opt(None, "YAML file with any of these options (flags override it)")

    def validate(self) -> "ScoreConfig":
        self.capabilities, self.recipes, self.proxies = _split(self.capabilities), _split(self.recipes), _split(self.proxies)
        self.recipe_params = YamlDict(self.recipe_params)
        checks = [("calibration", bool(self.calibration)), ("capabilities", bool(self.capabilities)),
                  ("seq_len", self.seq_len >= 8), ("min_tokens", 1 <= self.min_tokens <= self.seq_len),
                  ("proj_dim", self.proj_dim >= 1), ("stat_layers", self.stat_layers >= 1),
                  ("probe_max_docs", self.probe_max_docs >= 1), ("workers", self.workers >= 1),
                  ("batch_size", self.batch_size >= 1),
                  ("recipes", bool(self.recipes) or "layer" not in self.proxies)]
        for name, ok in checks:
            if not ok:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: out of range or empty")
        for p in self.proxies:
            if p not in PROXIES:
                raise UserError(f"--proxies {p}: expected one of {', '.join(PROXIES)}")
        check_choices(self)
        return self
