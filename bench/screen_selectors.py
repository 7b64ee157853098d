"""Screen every selector x k x seed on one embedded pool with `cola-ray score` (issue 11's first step).

    python bench/screen_selectors.py --pool runs/screen/pool --out runs/screen [--k 16,64] [--seeds 0,1,2]

--pool is a finished `cola-ray curate` output folder (its work/activations pool, embedded with
layer statistics). Every set is selected from that one pool with the one selection path
(`select_and_write`, no stage-1 quotas: the selectors alone are compared), and written under
--out/sets/<selector>-k<k>-s<seed>/ (a set already written is reused, so a rerun resumes). The
field's default is `default`: random from the wiki source alone (the WikiText practice).
`NAME@probes` is a statistics selector aimed at the run's probe split (`target: probes`): the
deployment's texts, disjoint from the evaluation split the scores use; `NAME@capabilities` the
same with every capability weighing the same (`target: capabilities`).

Scoring uses the **evaluation** split of the offline data as its probes (held-out wiki + news as
`general`, the HumanEval evaluation problems as `code`): disjoint from the pool and from the probe
split that stage 1 and `target: probes` steer with, so a selector is never scored on the texts
that steered it. Proxies come from the pool's stored statistics (no forward pass) unless
--layer-error is given. Writes --out/score/ (cola-ray score's outputs) and --out/screen.json
(per-selector means over seeds, with 95% intervals).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cola_ray import demo, storage  # noqa: E402
from cola_ray.config import CurateConfig  # noqa: E402
from cola_ray.pool import Pool  # noqa: E402
from cola_ray.selectors import get_selector  # noqa: E402
from cola_ray.workflows.curate import SHARDS  # noqa: E402
from cola_ray.workflows.selection import select_and_write  # noqa: E402

SELECTORS = ["default", "random", "random-stratified", "lexical", "cola", "moment-match", "outlier-coverage",
             "cluster-herding", "moment-match@probes", "outlier-coverage@probes", "cluster-herding@probes",
             "moment-match@capabilities", "outlier-coverage@capabilities", "cluster-herding@capabilities"]


def eval_probes(folder: Path, max_chars: int = 2400) -> list[str]:
    """The evaluation split as `--probes` files (general: held-out wiki + news; code: HumanEval)."""
    folder.mkdir(parents=True, exist_ok=True)
    general = [demo._head(t, max_chars) for d in ("wiki", "news") for t in demo.domain_documents(d, "heldout")]
    code = [p["prompt"] + p["canonical_solution"] for p in demo.humaneval_problems("heldout")]
    out = []
    for cap, texts in (("general", general), ("code", code)):
        path = folder / f"{cap}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        out.append(f"{cap}={path}")
    return out


def base_config(pool_out: str) -> CurateConfig:
    """The curate config the pool was built with, without stage 1 (the selectors alone are compared)."""
    manifest = json.loads(Path(pool_out, "manifest.json").read_text())
    fields = {f.name for f in dataclasses.fields(CurateConfig)}
    base = CurateConfig(**{k: v for k, v in manifest["config"].items() if k in fields})
    return dataclasses.replace(base, capabilities=[], probes=[], weights=[], deployment="general", target=None)


def select_sets(pool_out: str, out: Path, ks: list[int], seeds: list[int]) -> list[str]:
    base = base_config(pool_out)
    pool = Pool.open(storage.join(pool_out, SHARDS))
    folders = []
    probe_pool = storage.join(pool_out, "work", "probes")
    for name in SELECTORS:
        base_name, _, target = name.partition("@")
        spec = get_selector("random" if name == "default" else base_name)
        view = pool.only("wiki") if name == "default" else pool
        params = {"target": target} if target else {}
        for k in ks:
            for seed in (seeds if spec.uses_seed else seeds[:1]):
                folder = out / "sets" / f"{name.replace('@', '_')}-k{k}-s{seed}"
                folders.append(str(folder))
                if (folder / "manifest.json").exists():
                    continue
                t0 = time.perf_counter()
                cfg = dataclasses.replace(base, selector=spec.name, num_samples=k, seed=seed, out=str(folder),
                                          selector_params=params or base.selector_params)
                select_and_write(cfg, spec, view, str(folder), str(folder / "work"), probe_pool=probe_pool)
                print(f"[screen] {folder.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folders


def summarise(rows: list[dict]) -> dict:
    """selector-k -> (capability, proxy, recipe) -> mean, 95% interval half-width (t), seeds."""
    from scipy import stats

    groups: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        sel, k, _ = r["set"].rsplit("-", 2)
        key = f"{r['capability']}/{r['proxy']}" + (f"/{r['recipe']}" if r["recipe"] else "")
        groups.setdefault(f"{sel}-{k}", {}).setdefault(key, []).append(r["value"])
    out = {}
    for g, by in groups.items():
        out[g] = {}
        for key, vals in by.items():
            v = np.asarray(vals, np.float64)
            half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
            out[g][key] = {"mean": float(v.mean()), "ci95": half, "n": len(v)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, help="a finished cola-ray curate output folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", default="16,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--layer-error", action="store_true", help="also the layer-wise proxy (one forward pass a set)")
    args = ap.parse_args()
    out = Path(args.out)
    ks, seeds = [int(x) for x in args.k.split(",")], [int(x) for x in args.seeds.split(",")]
    from cola_ray.workflows.common import ensure_ray
    from cola_ray.workflows.score import score

    ensure_ray()
    t0 = time.perf_counter()
    folders = select_sets(args.pool, out, ks, seeds)
    select_s = time.perf_counter() - t0
    manifest = json.loads(Path(args.pool, "manifest.json").read_text())["config"]
    proxies = ["coverage", "moments"] + (["layer"] if args.layer_error else [])
    t1 = time.perf_counter()
    rows = score(manifest["model"], folders, str(out / "score"), probes=eval_probes(out / "eval-probes"),
                 proxies=proxies, seq_len=manifest["seq_len"], min_tokens=manifest["min_tokens"],
                 layers=manifest["layers"], proj_dim=manifest["proj_dim"], seed=manifest["seed"],
                 stat_layers=manifest["stat_layers"], probe_max_docs=200, workers=1)
    result = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPU cores", "select_s": round(select_s, 1),
              "score_s": round(time.perf_counter() - t1, 1), "summary": summarise(rows)}
    (out / "screen.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}))


if __name__ == "__main__":
    main()
