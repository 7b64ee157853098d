"""`cola-ray score`'s options."""

from __future__ import annotations

from dataclasses import dataclass

from cola_ray.config.fields import YamlDict, check_choices, opt, split_list
from cola_ray.errors import UserError

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
        self.capabilities, self.recipes, self.proxies = split_list(self.capabilities), split_list(self.recipes), split_list(self.proxies)
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
