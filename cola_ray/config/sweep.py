"""`cola-ray sweep`'s options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cola_ray.config.curate import CurateConfig
from cola_ray.config.fields import YamlDict, check_choices, field_name, opt, split_list
from cola_ray.config.score import PROXIES
from cola_ray.errors import UserError

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
        self.selectors, self.recipes, self.suites = split_list(self.selectors), split_list(self.recipes), split_list(self.suites)
        self.proxies = [p for p in split_list(self.proxies) if p.lower() not in ("none", "off", "false")]
        unknown = [p for p in self.proxies if p not in PROXIES]
        if unknown:
            raise UserError(f"--proxies {unknown[0]}: expected some of {', '.join(PROXIES)}, or none")
        try:
            self.seeds = [str(int(s)) for s in split_list(self.seeds)]
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
