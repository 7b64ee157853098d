"""`cola-ray sweep`: (selector or existing calibration set) x recipe x seed, each trial
compress -> evaluate, fanned out with Ray Tune; one results table, a report and plots.

Flow:
  1. validate everything cheap first (selectors, recipes + their parameters, suites, --out);
  2. per seed still needed: one curate run (its activation shards are the candidate pool, its
     COLA selection is the `cola` set), then every other selector applied to the same pool: the
     activation pass, the expensive part, runs once per seed, never once per selector;
  3. the trials not yet finished run as one Tune experiment (one trial per grid point, CPUs or
     one GPU each); the dense model is one more trial, evaluated once per sweep;
  4. results.parquet / results.csv, report.md and plots/ are rebuilt from every trial's JSON.

Layout under --out:
  pool/seed-<s>/            the curate run for seed s (pool shards, COLA calibration set)
  calibration/<set>/        calibration.jsonl + manifest.json of every selector's set
  trials/<trial>.json       one per trial: spec, status, error, scores, timings (the record)
  models/<trial>/           compressed checkpoints (save_models: true)
  tune/                     Ray Tune's experiment folders (one per invocation)
  results.parquet|csv, report.md, plots/*.png, sweep.json (settings), manifest.json

Resume: a trial whose JSON says status "ok" is never rerun; failed or missing trials are. We
keep our own per-trial records instead of `Tuner.restore` because (a) a restore must replay the
same param space, so adding a seed or a selector to a finished sweep would not be possible;
(b) restore reruns unfinished function trials from scratch anyway (they have no checkpoints to
resume from); (c) the records are what the report reads, live next to the results on the same
local/S3 storage, and stay valid if Tune's experiment folder is deleted or Ray is upgraded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

from cola_ray import storage
from cola_ray.cache import Marker, canonical
from cola_ray.config import CurateConfig, SweepConfig
from cola_ray.errors import UserError
from cola_ray.selectors import get_selector
from cola_ray.workflows.common import RunClock, ensure_ray, log, package_versions
from cola_ray.workflows.trial import calibration_file

DENSE = "dense"
# Settings that change a trial's numbers: a rerun may reuse finished trials only if they match.
RESULT_KEYS = ("model", "suites", "eval_limit", "eval_batch_size", "eval_backend", "dtype", "shared_pool")
# Fields of a trial spec that define its result: a finished trial is reused only if they match
# (so changing one recipe's parameters reruns that recipe's trials, and only those).
SPEC_IDENTITY = ("kind", "model", "calibration", "recipe", "params", "seq_len", "suites", "eval_limit",
                 "eval_batch_size", "eval_backend", "dtype")


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    label: str  # "cola-seed0", "lexical" (seed-free selector), "set-<name>-<hash>" (given URI)
    uri: str
    selector: str | None = None
    seed: int | None = None
    pool_seed: int | None = None  # the curate run (activation pass) whose pool it is selected from


def _absolute(uri: str) -> str:
    """Tune runs trials in their own working folders: every local path must be absolute."""
    return uri if storage.is_s3(uri) else os.path.abspath(os.path.expanduser(uri))


def curate_template(cfg: SweepConfig) -> CurateConfig:
    """The curate options every trial shares (demo corpus/settings when none are given)."""
    from cola_ray.config import coerce, field_name
    from cola_ray.workflows.curate import resolve_defaults

    values = {field_name(CurateConfig, k): coerce(CurateConfig, field_name(CurateConfig, k), v, "--curate")
              for k, v in cfg.curate.items()}
    if values.get("corpus"):
        values["corpus"] = [_absolute(c) for c in values["corpus"]]
    base = CurateConfig(model=cfg.model, out=storage.join(cfg.out, "pool"), **values)
    if cfg.model and not base.corpus and not cfg.selectors:  # only given sets: no pool to curate
        return base.validate()
    return resolve_defaults(base)


def resolve(cfg: SweepConfig) -> SweepConfig:
    cfg = cfg.validate()
    cfg.out = _absolute(cfg.out or os.path.join("runs", "sweep-" + time.strftime("%Y%m%d-%H%M%S")))
    if cfg.model and os.path.exists(cfg.model):
        cfg.model = _absolute(cfg.model)
    cfg.calibration_sets = [_absolute(u) for u in cfg.calibration_sets]
    return cfg


def calibration_sets(cfg: SweepConfig, seeds: list[int]) -> list[CalibrationSet]:
    out = []
    for name in cfg.selectors:
        if get_selector(name).uses_seed:
            out += [CalibrationSet(f"{name}-seed{s}", storage.join(cfg.out, "calibration", f"{name}-seed{s}"), name, s,
                                   seeds[0] if cfg.shared_pool else s) for s in seeds]
        else:  # the same pool gives the same set for every seed: one set, from the first seed's pool
            out.append(CalibrationSet(name, storage.join(cfg.out, "calibration", name), name, seeds[0], seeds[0]))
    for uri in cfg.calibration_sets:
        tag = hashlib.sha1(uri.encode()).hexdigest()[:6]
        out.append(CalibrationSet(f"set-{storage.basename(uri).removesuffix('.jsonl')}-{tag}", uri))
    return out


def plan_trials(cfg: SweepConfig, base: CurateConfig) -> list[dict]:
    """Every trial spec of the grid, dense first; keys are stable across reruns."""
    seeds = [int(s) for s in cfg.seeds]
    gpus = _trial_gpus(cfg)
    device = cfg.device if cfg.device != "auto" else ("cuda" if gpus else "cpu")
    common = dict(model=base.model, seq_len=base.seq_len, suites=cfg.suites, eval_limit=cfg.eval_limit,
                  eval_batch_size=cfg.eval_batch_size, eval_backend=cfg.eval_backend, dtype=cfg.dtype,
                  device=device, threads=cfg.trial_cpus)
    specs = [dict(key=DENSE, kind="dense", label=DENSE, selector=None, seed=None, recipe=None,
                  calibration=None, **common)]
    for recipe in cfg.recipes:  # recipe-major: Tune runs grid points in order, so the first recipe completes first
        for cset in calibration_sets(cfg, seeds):
            key = f"{cset.label}--{recipe}"
            specs.append(dict(key=key, kind="compressed", label=cset.label, selector=cset.selector, seed=cset.seed,
                              pool_seed=cset.pool_seed, recipe=recipe, params=dict(cfg.recipe_params.get(recipe) or {}),
                              calibration=cset.uri, **common,
                              save_model=storage.join(cfg.out, "models", key) if cfg.save_models else None))
    for s in specs:
        s["result_uri"] = storage.join(cfg.out, "trials", f"{s['key']}.json")
    return specs


def _trial_gpus(cfg: SweepConfig) -> float:
    if cfg.trial_gpus is not None:
        return cfg.trial_gpus
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def check_components(cfg: SweepConfig) -> None:
    """Recipe names and parameters, suite names, the given calibration sets' files: a typo fails
    here, not in every trial."""
    from cola_ray.compress import get_recipe
    from cola_ray.evaluate import get_suite

    for name in cfg.selectors:
        try:
            get_selector(name)
        except UserError as e:
            raise UserError(f"--selectors: {e}") from None
    for name in cfg.recipe_params:
        get_recipe(name)
    for name in cfg.recipes:
        get_recipe(name).modifiers(cfg.recipe_params.get(name) or None)
    for name in cfg.suites:
        get_suite(name)
    for uri in cfg.calibration_sets:  # a typo in a path fails now, not after hours of other trials
        calibration_file(uri)


def check_settings(cfg: SweepConfig, base: CurateConfig) -> dict:
    """Refuse an --out that holds a sweep with other result-changing settings (like curate)."""
    settings = {k: getattr(cfg, k) for k in RESULT_KEYS}
    curate = {k: v for k, v in dataclasses.asdict(base).items()
              if k not in ("out", "seed", "selector", "config", "workers", "batch_size", "device")}
    curate["max_docs"] = curate.pop("first_docs")  # its name in the markers of sweeps before the rename
    marker = Marker(storage.join(cfg.out, "sweep.json"))
    old = (marker.read() or {}).get("curate")
    if old is not None:  # an option newer than the sweep on disk, left at its default, changes nothing
        defaults = {f.name: f.default for f in dataclasses.fields(CurateConfig)}
        curate = {k: v for k, v in curate.items() if k in old or v != defaults.get(k)}
    settings.update(model=base.model, curate=curate)
    differences = marker.differences(settings)
    if differences:
        raise UserError(f"--out {cfg.out}: holds a sweep with other settings ({', '.join(differences)}); "
                        f"use another --out")
    marker.write(settings)
    return canonical(settings)


def finished(specs: list[dict]) -> dict[str, dict]:
    """Records of trials that finished with status ok for the same spec (these are not rerun)."""
    out = {}
    for s in specs:
        if storage.exists(s["result_uri"]):
            rec = storage.read_json(s["result_uri"])
            same = all(json.dumps(rec.get("spec", {}).get(k)) == json.dumps(s.get(k)) for k in SPEC_IDENTITY)
            if rec.get("status") == "ok" and same:
                out[s["key"]] = rec
    return out


def build_calibration_sets(cfg: SweepConfig, base: CurateConfig, todo: list[dict], clock: RunClock) -> None:
    """Curate one pool per seed that a pending trial needs, then write every needed selector's
    set from it (sets already written, with their manifest, are reused)."""
    from cola_ray.pool import Pool
    from cola_ray.workflows.curate import SHARDS, run_curate
    from cola_ray.workflows.selection import select_and_write

    needed: dict[int, dict[str, dict]] = {}
    for s in todo:
        if s["selector"] is not None:
            needed.setdefault(s["pool_seed"], {})[s["label"]] = s
    for pool_seed in sorted(needed):
        pool_out = storage.join(cfg.out, "pool", f"seed-{pool_seed}")
        pool_cfg = dataclasses.replace(base, out=pool_out, seed=pool_seed, selector="cola")
        if not storage.exists(storage.join(pool_out, "manifest.json")):
            with clock(f"curate pool (seed {pool_seed})"):
                run_curate(pool_cfg)
        pool = Pool.open(storage.join(pool_out, SHARDS))
        for label, spec in sorted(needed[pool_seed].items()):
            target = spec["calibration"]
            if storage.exists(storage.join(target, "manifest.json")):
                continue
            log(f"selecting {label} from the seed-{pool_seed} pool")
            with clock(f"select {label}"):
                select_and_write(dataclasses.replace(pool_cfg, seed=spec["seed"], selector=spec["selector"]),
                                 get_selector(spec["selector"]), pool, target,
                                 storage.join(pool_out, "work", "selectors"))


def _score_groups(specs: list[dict], first_seed: int) -> dict[int, list[str]]:
    """The calibration sets of the grid by the seed of the pool they come from (a sweep's own sets
    are scored from their pool's statistics; given sets with the first seed, like their pools)."""
    groups: dict[int, set[str]] = {}
    for s in specs:
        if s["kind"] == "compressed" and storage.exists(storage.join(s["calibration"], "calibration.jsonl")):
            seed = s["pool_seed"] if s["selector"] is not None else first_seed
            groups.setdefault(int(seed), set()).add(s["calibration"])
    return {k: sorted(v) for k, v in sorted(groups.items())}


def score_sets(cfg: SweepConfig, base: CurateConfig, specs: list[dict]) -> None:
    """`cola-ray score` over every calibration set of the grid, under <out>/score/seed-<s>/: the
    cheap signal recorded next to each trial's measured scores. A failure here is logged and the
    trials still run (the proxies are a by-product, not a result)."""
    from cola_ray.config import ScoreConfig
    from cola_ray.workflows.score import run_score

    for seed, uris in _score_groups(specs, int(cfg.seeds[0])).items():
        opts = dict(capabilities=base.capabilities or ScoreConfig().capabilities, probes=list(base.probes),
                    proxies=list(cfg.proxies), seq_len=base.seq_len, min_tokens=base.min_tokens, layers=base.layers,
                    proj_dim=base.proj_dim, seed=seed, stat_layers=base.stat_layers,
                    probe_max_docs=base.probe_max_docs, device=cfg.device, dtype=base.dtype)
        try:
            run_score(ScoreConfig(model=base.model, calibration=uris, out=storage.join(cfg.out, "score", f"seed-{seed}"),
                                  **opts))
        except UserError as e:
            log(f"score: not recorded for the seed-{seed} sets ({e})")


def load_proxies(out: str, specs: list[dict]) -> dict[str, dict[str, float]]:
    """set label -> {"<capability>/<proxy>[/<recipe>]": value} from the score runs under <out>/score."""
    label = {s["calibration"]: s["label"] for s in specs if s["kind"] == "compressed"}
    found: dict[str, dict[str, float]] = {}
    for uri in storage.list_files(storage.join(out, "score"), "manifest.json"):
        m = storage.read_json(uri)
        by_name = {name: label.get(v["uri"]) for name, v in (m.get("sets") or {}).items()}
        for row in m.get("scores") or []:
            if by_name.get(row["set"]):
                key = "/".join(x for x in (row["capability"], row["proxy"], row["recipe"]) if x)
                found.setdefault(by_name[row["set"]], {})[key] = row["value"]
    return found


def run_tune(cfg: SweepConfig, todo: list[dict]) -> None:
    """All pending trials as one Tune experiment; trials record themselves (trial.py). A trial
    whose process died without writing its record is recorded here from Tune's error."""
    from ray import tune

    from cola_ray.workflows.trial import tune_trainable

    gpus = _trial_gpus(cfg)
    storage_uri = cfg.storage or storage.join(cfg.out, "tune")
    fs, path = storage.filesystem(storage_uri)
    trainable = tune.with_resources(tune_trainable, {"cpu": cfg.trial_cpus, "gpu": gpus})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(todo)},
        # reuse_actors: a trial process keeps torch/transformers/llm-compressor imported for the next
        # trial (tens of seconds each on a small CPU node); every trial loads its own model afresh.
        tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent, reuse_actors=True,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name="run-" + time.strftime("%Y%m%d-%H%M%S"), storage_path=path,
                                  storage_filesystem=fs, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    grid = tuner.fit()
    for result in grid:
        spec = (result.config or {}).get("trial") or {}
        if result.error is not None and spec and not storage.exists(spec["result_uri"]):
            first = str(result.error).strip().splitlines()
            storage.write_json(spec["result_uri"], {
                "key": spec["key"], "spec": {k: v for k, v in spec.items() if k != "result_uri"},
                "status": "failed", "error": f"{type(result.error).__name__}: {first[0] if first else ''}"[:500],
                "timings_s": {}})


def _trial_dirname(trial) -> str:
    return f"{trial.config['trial']['key']}-{trial.trial_id}"


def run_sweep(cfg: SweepConfig) -> dict:
    """Run (or resume) a sweep; returns its manifest (also written to --out). One run at a time
    per --out (lock.py)."""
    from cola_ray import lock

    cfg = resolve(cfg)
    with lock.hold(cfg.out, "sweep"):
        return _sweep(cfg)


def _sweep(cfg: SweepConfig) -> dict:
    from cola_ray.report_sweep import write_report

    clock = RunClock()
    with clock("validate"):
        base = curate_template(cfg)
        check_components(cfg)
        ensure_ray()
        storage.check_writable(cfg.out)
        settings = check_settings(cfg, base)
        specs = plan_trials(cfg, base)
        done = finished(specs)
        todo = [s for s in specs if s["key"] not in done and not cfg.report_only]
    log(f"{len(specs)} trials ({len(done)} already finished, {len(todo)} to run) -> {cfg.out}")
    if todo:
        build_calibration_sets(cfg, base, todo, clock)
    if not cfg.report_only and cfg.proxies:
        with clock("score sets"):
            score_sets(cfg, base, specs)
    if todo:
        with clock("trials (tune)"):
            run_tune(cfg, todo)
    with clock("report"):
        records = [storage.read_json(s["result_uri"]) if storage.exists(s["result_uri"])
                   else {"key": s["key"], "spec": s, "status": "missing", "timings_s": {}} for s in specs]
        artifacts = write_report(cfg.out, records, settings, load_proxies(cfg.out, specs))
    manifest = {
        "kind": "sweep",
        "schema_version": 2,  # 1: before the one selection path (its sets' manifests are still read)
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "settings": settings,
        "versions": package_versions(),
        "trials": {"total": len(specs), "reused": len(done), "run": len(todo),
                   "ok": sum(r["status"] == "ok" for r in records),
                   "failed": sorted(r["key"] for r in records if r["status"] != "ok")},
        "timings_s": clock.timings,
        "artifacts": artifacts,
        "out": cfg.out,
    }
    storage.write_json(storage.join(cfg.out, "manifest.json"), manifest)
    return manifest
