"""`cola-ray score`: predict, in seconds, how well calibration sets will preserve each capability
(stages/proxies.py says what each proxy is).

Outline:
1. check every set (exists, jsonl with a string `text` on every line, not empty) and every
   capability's probes before anything heavy;
2. embed the probes exactly as curate embeds candidates (capabilities.embed_probes: same model,
   layers, projection, seed, statistics; cached under --out/work/probes), and, for the layer-wise
   proxy, one forward pass over them for their E[x x^T] (cached under --out/work/score-probes);
3. sets from a curate folder whose pool was embedded with the same settings are scored from the
   pool's stored vectors and statistics (no forward pass, unless the layer-wise proxy is asked
   for); any other set gets one forward pass, fanned out over `--workers` actors (one model each);
4. scores.parquet / scores.csv (one row per set x capability x proxy), one bar plot per
   capability, manifest.json (last), and a short table on the terminal.
Scoring never writes into the sets it reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pyarrow as pa

from cola_ray import storage
from cola_ray.cache import Marker
from cola_ray.config import CurateConfig, ScoreConfig
from cola_ray.errors import UserError
from cola_ray.pool import STAT_COLUMNS, Pool
from cola_ray.stages import proxies, runner
from cola_ray.stages.scorer import SetScorer
from cola_ray.selectors.experts import coverage
from cola_ray.workflows import capabilities, processing
from cola_ray.workflows import experts as expert_coverage
from cola_ray.workflows.common import RunClock, ensure_ray, log, package_versions

PROBE_HESSIANS = "work/score-probes"
# the curate settings a pool must share with the scoring run for its stored statistics to be used
POOL_KEYS = ("model", "layers", "proj_dim", "seed", "stat_layers", "dtype")


@dataclasses.dataclass
class CalibrationSet:
    name: str
    uri: str
    texts: list[str]
    ids: list[str] | None = None  # chunk ids in a curate pool
    pool: Pool | None = None  # the pool its stored statistics come from (None: forward pass)
    why_forward: str = ""


def _curate_config(cfg: ScoreConfig) -> CurateConfig:
    return CurateConfig(model=cfg.model, out=cfg.out, seq_len=cfg.seq_len, min_tokens=cfg.min_tokens,
                        layers=cfg.layers, proj_dim=cfg.proj_dim, seed=cfg.seed, stat_layers=cfg.stat_layers,
                        batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
                        capabilities=cfg.capabilities, probes=cfg.probes,
                        probe_max_docs=cfg.probe_max_docs).validate()


def _read_jsonl(uri: str, flag: str) -> list[dict]:
    if not storage.exists(uri):
        raise UserError(f"{flag} {uri}: not found")
    raw = storage.read_bytes(uri)
    rows = []
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{flag} {uri}: line {n} is not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            got = "no field 'text'" if not isinstance(row, dict) or "text" not in row else \
                f"field 'text' is {type(row['text']).__name__}"
            raise UserError(f"{flag} {uri}: line {n}: {got} (a calibration set needs a string 'text' per line)")
        rows.append(row)
    if not rows:
        raise UserError(f"{flag} {uri}: empty (no calibration text)")
    return rows


def load_set(uri: str, cfg: ScoreConfig) -> CalibrationSet:
    """A .jsonl (any texts) or a curate output folder (its calibration.jsonl and, when it was
    embedded with this run's settings, its pool)."""
    folder = uri.rstrip("/")
    is_folder = not folder.endswith((".jsonl", ".json")) and storage.exists(storage.join(folder, "calibration.jsonl"))
    if not is_folder:
        if not folder.endswith((".jsonl", ".json")) and not storage.exists(folder):
            raise UserError(f"--calibration {uri}: not found")
        rows = _read_jsonl(folder, "--calibration")
        return CalibrationSet(storage.basename(folder).rsplit(".", 1)[0], uri, [r["text"] for r in rows],
                              why_forward="an external set")
    rows = _read_jsonl(storage.join(folder, "calibration.jsonl"), "--calibration")
    name = storage.basename(folder)
    out = CalibrationSet(name, uri, [r["text"] for r in rows], ids=[r.get("id") for r in rows])
    manifest_uri = storage.join(folder, "manifest.json")
    if not storage.exists(manifest_uri):
        out.why_forward = "no manifest next to it"
        return out
    manifest = storage.read_json(manifest_uri)
    # its own pool, or the one it was selected from (a sweep's sets and `curate` reruns share one)
    shard_dir = storage.join(folder, "work", "activations")
    if not storage.list_files(shard_dir, ".parquet"):
        shard_dir = (manifest.get("pool") or {}).get("folder") or shard_dir
    if not storage.list_files(shard_dir, ".parquet"):
        out.why_forward = "no pool next to it"
        return out
    # what the pool was embedded with (its settings marker; a set's own config may hold another
    # seed: the selection seed of a set drawn from a shared pool)
    marker = storage.join(shard_dir, "_settings.json")
    given = storage.read_json(marker) if storage.exists(marker) else manifest.get("config", {})
    mine = dataclasses.asdict(_curate_config(cfg))
    differ = [k for k in POOL_KEYS if str(given.get(k, CurateConfig.__dataclass_fields__[k].default)) != str(mine[k])]
    if differ:
        out.why_forward = f"its pool was embedded with other {', '.join(differ)}"
        return out
    pool = Pool.open(shard_dir)
    if pool.stats_layout() is None:
        out.why_forward = "its pool has no layer statistics (embedded by an older cola-ray, or --stat-layers 0)"
        return out
    out.pool = pool
    return out


def _recipes(cfg: ScoreConfig) -> list[tuple[str, str, dict]]:
    from cola_ray.compress.registry import get_recipe

    out = []
    for name in cfg.recipes:
        try:
            recipe = get_recipe(name)
        except UserError as e:
            raise UserError(f"--recipes: {e}") from None
        params = {**recipe.defaults, **dict(cfg.recipe_params.get(name) or {})}
        try:
            family, params = proxies.recipe_family(recipe.builder.__name__, params)
        except ValueError:
            raise UserError(f"--recipes {name}: no layer-wise proxy for this recipe (Wanda, SparseGPT and GPTQ "
                            "recipes have one)") from None
        out.append((name, family, params))
    return out


def _scorer(cfg: ScoreConfig, ccfg: CurateConfig, device: str, recipes, probe_rows: bool = False) -> SetScorer:
    return SetScorer(model=ccfg.model, layers=cfg.layers, proj_dim=cfg.proj_dim, seed=cfg.seed, device=device,
                     dtype=cfg.dtype, micro_batch_size=cfg.batch_size, stat_layers=cfg.stat_layers,
                     seq_len=cfg.seq_len, recipes=recipes, hessian_dir=storage.join(cfg.out, PROBE_HESSIANS),
                     capabilities=list(cfg.capabilities), probe_rows=probe_rows, batch_size=1)


def _forward(rows: list[tuple[str, list[str]]], stage: SetScorer, workers: int) -> dict[str, dict]:
    import ray

    ds = ray.data.from_arrow(pa.table({"set": [r[0] for r in rows], "texts": [r[1] for r in rows]}))
    out = {}
    for batch in runner.run(ds, stage, workers=min(workers, len(rows))).iter_batches(batch_format="pyarrow",
                                                                                    batch_size=None):
        for r in batch.to_pylist():
            out[r["set"]] = r
            log(f"forward pass {len(out)}/{len(rows)}: {r['set']} ({r['seconds']:.1f} s)")
    return out


def _probe_tables(cfg, ccfg, opts, device) -> dict[str, dict]:
    """Per capability: probe vectors, statistics, texts (embedded like candidates)."""
    files = opts.probe_files()
    proc = processing.processing_options(ccfg.processing_args(), ccfg.model, ccfg.text_field, [f.source for f in files])
    fingerprint = {k: getattr(ccfg, k) for k in ("model", "seq_len", "min_tokens", "layers", "proj_dim", "seed",
                                                  "dtype", "stat_layers")}
    table = capabilities.embed_probes(files, proc, device, fingerprint, out=cfg.out, text_field=ccfg.text_field,
                                      coverage=ccfg.coverage_args(), model=ccfg.model_args(),
                                      processing=ccfg.processing_args(), resources=ccfg.resources_args())
    pool = Pool.open(storage.join(cfg.out, capabilities.PROBE_SHARDS))
    stats = pool.read(["source", "num_tokens", *STAT_COLUMNS])
    out = {}
    for cap in cfg.capabilities:
        sel = [i for i, s in enumerate(table.column("source").to_pylist()) if s == cap]
        st = [i for i, s in enumerate(stats.column("source").to_pylist()) if s == cap]
        out[cap] = {"vectors": np.asarray(table.column("vector").take(sel).to_pylist(), np.float32),
                    "texts": table.column("text").take(sel).to_pylist(),
                    "stats": {c: stats.column(c).take(st).to_pylist() for c in (*STAT_COLUMNS, "num_tokens")}}
    return out, pool.stats_layout(), fingerprint


def run_score(cfg: ScoreConfig) -> dict:
    """Score the sets of `cfg`; returns the manifest (also written to --out). One run at a time
    per --out (lock.py)."""
    from cola_ray import demo, lock

    cfg.model = cfg.model or demo.DEMO_DEFAULTS["model"]
    cfg.out = cfg.out or os.path.join("runs", "score-" + time.strftime("%Y%m%d-%H%M%S"))
    cfg.validate()
    with lock.hold(cfg.out, "score"):
        return _score(cfg)


def _score(cfg: ScoreConfig) -> dict:
    from cola_ray import models

    clock = RunClock()
    with clock("validate"):
        models.load_tokenizer(cfg.model)
        ccfg = _curate_config(cfg)
        opts = capabilities.parse_options(ccfg.coverage_args())
        recipes = _recipes(cfg) if "layer" in cfg.proxies else []
        sets = [load_set(u, cfg) for u in cfg.calibration]
        names = [s.name for s in sets]
        for i, s in enumerate(sets):  # two sets named alike (two folders' calibration.jsonl) get their index
            if names.count(s.name) > 1:
                s.name = f"{s.name}-{i}"
        storage.check_writable(cfg.out)
        storage.delete(storage.join(cfg.out, "manifest.json"))
        ensure_ray()
        device = models.pick_device(cfg.device)
    with clock("probes"):
        probe, layout, fingerprint = _probe_tables(cfg, ccfg, opts, device)
        if recipes:
            marker = Marker(storage.join(cfg.out, PROBE_HESSIANS, "_settings.json"))
            settings = {**fingerprint, "probes": {c: probe[c]["texts"] for c in cfg.capabilities}}
            if not marker.matches(settings):
                _forward([(c, probe[c]["texts"]) for c in cfg.capabilities],
                         _scorer(cfg, ccfg, device, [], probe_rows=True), 1)
                marker.write(settings)
    with clock("sets"):
        need = [s for s in sets if s.pool is None or recipes]
        for s in sets:
            if s.pool is None:
                log(f"set {s.name}: one forward pass ({s.why_forward})")
        passes = _forward([(s.name, s.texts) for s in need], _scorer(cfg, ccfg, device, recipes), cfg.workers) \
            if need else {}
    with clock("proxies"):
        rows, per_set = _score_all(cfg, sets, passes, probe, layout)
    return _write(cfg, rows, per_set, clock, device, layout)


def _set_view(s: CalibrationSet, passed: dict | None) -> dict:
    if s.pool is not None:
        table = s.pool.read(["vector", "num_tokens", *STAT_COLUMNS], ids=s.ids)
        missing = len(set(s.ids)) - table.num_rows
        if missing:
            raise UserError(f"--calibration {s.uri}: {missing} of its ids are not in its pool's kept chunks")
        layout = s.pool.experts_layout()
        experts = None
        if layout:
            ids, _, counts = expert_coverage.pool_counts(s.pool, layout)
            row = {c: i for i, c in enumerate(ids)}
            experts = (counts[[row[c] for c in s.ids]].sum(0), layout)
        return {"vectors": np.asarray(table.column("vector").to_pylist(), np.float32),
                "stats": {c: table.column(c).to_pylist() for c in STAT_COLUMNS},
                "tokens": table.column("num_tokens").to_pylist(), "truncated": 0, "empty": 0, "from": "pool",
                "experts": experts}
    return {"vectors": np.asarray(passed["vectors"], np.float32),
            "stats": {c: passed[c] for c in STAT_COLUMNS}, "tokens": passed["tokens"],
            "truncated": passed["truncated"], "empty": passed["empty"], "from": "forward pass",
            "experts": ((np.asarray(passed["expert_tokens"]), json.loads(passed["expert_layout"]))
                        if passed.get("expert_layout") else None)}


def _score_all(cfg, sets, passes, probe, layout):
    slots = len(layout["slots"])
    # the probes' side of every proxy, once per capability (not once per set)
    thresholds = {cap: proxies.probe_threshold(probe[cap]["vectors"]) for cap in cfg.capabilities}
    probe_stats = {cap: proxies.set_stats(probe[cap]["stats"]["stat_moments"], probe[cap]["stats"]["stat_sketch"],
                                          probe[cap]["stats"]["stat_outliers"], probe[cap]["stats"]["num_tokens"], slots)
                   for cap in cfg.capabilities} if "moments" in cfg.proxies else {}
    rows, per_set = [], {}
    for s in sets:
        t0 = time.perf_counter()
        view = _set_view(s, passes.get(s.name))
        if len(view["tokens"]) == 0:
            raise UserError(f"--calibration {s.uri}: every text is empty ({view['empty']} texts)")
        set_stats = proxies.set_stats(view["stats"]["stat_moments"], view["stats"]["stat_sketch"],
                                      view["stats"]["stat_outliers"], view["tokens"], slots)
        layer = json.loads(passes[s.name]["layer_error"]) if s.name in passes else {}
        for cap in cfg.capabilities:
            p = probe[cap]
            values = {}
            if "coverage" in cfg.proxies:
                values.update(proxies.coverage(p["vectors"], view["vectors"], thresholds[cap]))
            if "moments" in cfg.proxies:
                values.update(proxies.statistics_match(set_stats, probe_stats[cap]))
            for name, value in values.items():
                rows.append({"set": s.name, "capability": cap, "proxy": name, "recipe": "", "value": value,
                             "lower_is_better": proxies.LOWER_IS_BETTER[name]})
            for recipe, by_cap in layer.items():
                if cap in by_cap:
                    rows.append({"set": s.name, "capability": cap, "proxy": "layer_error", "recipe": recipe,
                                 "value": by_cap[cap], "lower_is_better": True})
        per_set[s.name] = {"uri": s.uri, "texts": len(s.texts), "chunks": len(view["tokens"]),
                           "tokens": int(sum(view["tokens"])), "truncated": view["truncated"], "empty": view["empty"],
                           "statistics_from": view["from"] if s.pool is None else "pool",
                           "forward_pass_s": round(passes[s.name]["seconds"], 3) if s.name in passes else 0.0,
                           "proxies_s": round(time.perf_counter() - t0, 4)}
        if view["experts"] is not None:  # MoE: the set's expert coverage (selectors/experts.py)
            per_set[s.name]["experts"] = coverage(*view["experts"])
        if view["truncated"] or view["empty"]:
            log(f"set {s.name}: {view['truncated']} text(s) cut to --seq-len {cfg.seq_len}, "
                f"{view['empty']} empty text(s) not scored")
    return rows, per_set


def _write(cfg, rows, per_set, clock, device, layout) -> dict:
    from cola_ray.report_score import score_plot

    table = pa.Table.from_pylist(rows)
    storage.write_parquet(storage.join(cfg.out, "scores.parquet"), table)
    storage.write_text(storage.join(cfg.out, "scores.csv"), table.to_pandas().to_csv(index=False))
    plots = []
    for cap in cfg.capabilities:
        name = f"scores_{cap}.png"
        storage.write_bytes(storage.join(cfg.out, name), score_plot(rows, cap))
        plots.append(name)
    manifest = {"schema_version": 1, "command": "score", "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
                "versions": package_versions(), "device": device, "sets": per_set, "stat_layout": layout,
                "proxies": {p: {"lower_is_better": v} for p, v in proxies.LOWER_IS_BETTER.items()},
                "timings_s": clock.timings, "artifacts": ["scores.parquet", "scores.csv", *plots], "out": cfg.out,
                "scores": rows}
    storage.write_json(storage.join(cfg.out, "manifest.json"), manifest)
    return manifest


def score(model: str, calibration: list[str], out: str, **options) -> list[dict]:
    """Python API: the score rows (set, capability, proxy, recipe, value, lower_is_better)."""
    return run_score(ScoreConfig(model=model, calibration=list(calibration), out=out, **options))["scores"]
