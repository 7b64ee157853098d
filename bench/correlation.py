"""How well does each `cola-ray score` proxy predict a real compress + evaluate? (docs/results.md
section 3, issue 10.) Joins a finished sweep's trial records with score outputs over the same sets.

    python bench/correlation.py --sweep runs/corr/sweep --score runs/corr/score \
        --external runs/corr/score-ext --records bench/records/score-correlation \
        [--plot docs/img/score-correlation.png]

Metric (fixed in docs/results.md before any result): per evaluation domain, degradation =
(ppl - ppl_dense) / ppl_dense (HumanEval: on the solutions' per-token perplexity, exp(NLL/token));
per capability the mean over its domains (general: wiki, news; code: code, HumanEval).
For each recipe x capability x proxy: Spearman's rho between the proxy (sign flipped where higher
is better, so a positive rho means "the proxy ranks sets as the compressor does") and the
degradation over the sets, with a 95% percentile bootstrap interval over sets (10,000 resamples,
seed 0); and the cost ratio: the proxy's seconds per set over the mean trial seconds of the recipe.

--records receives a copy of every trial record (small JSON) and correlation.json, so the
experiment's numbers outlive the run folders; sets missing a trial are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

DOMAINS = {"general": ("ppl-wiki", "ppl-news"), "code": ("ppl-code", "humaneval-ll")}
RESAMPLES = 10_000


def domain_value(scores: dict, suite: str) -> float:
    if suite == "humaneval-ll":
        return math.exp(scores["humaneval-ll/nll_per_token"])
    return scores[f"{suite}/word_perplexity"]


def set_name(label: str) -> str:
    """The sweep's label of a given set, `set-<folder name>-<hash>`, back to the folder name."""
    return label.removeprefix("set-").rsplit("-", 1)[0]


def degradations(trial_dir: Path) -> tuple[dict, dict, list[str]]:
    """(recipe -> set -> capability -> degradation, recipe -> mean trial seconds, failed keys)."""
    records = [json.loads(p.read_text()) for p in sorted(trial_dir.glob("*.json"))]
    dense = next((r for r in records if r["key"] == "dense" and r["status"] == "ok"), None)
    if dense is None:
        sys.exit(f"{trial_dir}: no finished dense trial")
    out, seconds, failed = {}, {}, []
    for r in records:
        if r["key"] == "dense":
            continue
        if r["status"] != "ok":
            failed.append(r["key"])
            continue
        recipe = r["spec"]["recipe"]
        by_cap = {}
        for cap, suites in DOMAINS.items():
            d = [(domain_value(r["scores"], s) - domain_value(dense["scores"], s)) / domain_value(dense["scores"], s)
                 for s in suites]
            by_cap[cap] = float(np.mean(d))
        out.setdefault(recipe, {})[set_name(r["spec"]["label"])] = by_cap
        seconds.setdefault(recipe, []).append(r["timings_s"]["total"])
    return out, {k: float(np.mean(v)) for k, v in seconds.items()}, failed


def load_scores(folder: Path, only: set[str] | None = None) -> tuple[dict, dict]:
    """(set -> (capability, proxy, recipe) -> signed value, set -> (capability, proxy, recipe) ->
    seconds spent on the set by that score run), the proxies in `only` (default: all)."""
    values, cost = {}, {}
    m = json.loads((folder / "manifest.json").read_text())
    for row in m["scores"]:
        if only is not None and row["proxy"] not in only:
            continue
        sign = 1.0 if row["lower_is_better"] else -1.0
        key = (row["capability"], row["proxy"], row["recipe"])
        values.setdefault(row["set"], {})[key] = sign * row["value"]
        s = m["sets"][row["set"]]
        cost.setdefault(row["set"], {})[key] = s["forward_pass_s"] + s["proxies_s"]
    return values, cost


def merge(*parts: tuple[dict, dict]) -> tuple[dict, dict]:
    values, cost = {}, {}
    for v, c in parts:
        for name in v:
            values.setdefault(name, {}).update(v[name])
            cost.setdefault(name, {}).update(c[name])
    return values, cost


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman per row of (m, n) arrays: Pearson of the ranks; NaN for a constant row."""
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean(-1, keepdims=True)
    ry -= ry.mean(-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / den, np.nan)


def spearman_ci(x: list[float], y: list[float], seed: int = 0) -> tuple[float, float, float]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rho = float(_rho(x[None], y[None])[0])
    idx = np.random.default_rng(seed).integers(0, len(x), size=(RESAMPLES, len(x)))
    boot = _rho(x[idx], y[idx])
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return rho, float(lo), float(hi)


def complete(deg: dict, sets: set[str]) -> tuple[dict, dict]:
    """The recipes whose every scored set has its trial (the protocol reports no correlation for a
    recipe before that), and the others with the sets they still lack."""
    done = {r: by_set for r, by_set in deg.items() if sets <= set(by_set)}
    return done, {r: sorted(sets - set(by_set)) for r, by_set in deg.items() if r not in done}


def correlate(deg: dict, values: dict, cost: dict, trial_s: dict) -> list[dict]:
    rows = []
    for recipe, by_set in sorted(deg.items()):
        names = sorted(set(by_set) & set(values))
        keys = sorted({k for n in names for k in values[n]})
        for cap, proxy, proxy_recipe in keys:
            if proxy_recipe and proxy_recipe != recipe:
                continue
            have = [n for n in names if (cap, proxy, proxy_recipe) in values[n]]
            if len(have) < 4:
                continue
            x = [values[n][(cap, proxy, proxy_recipe)] for n in have]
            y = [by_set[n][cap] for n in have]
            rho, lo, hi = spearman_ci(x, y)
            per_set = float(np.mean([cost[n][(cap, proxy, proxy_recipe)] for n in have]))
            rows.append({"recipe": recipe, "capability": cap, "proxy": proxy, "sets": len(have), "spearman": rho,
                         "ci95": [lo, hi], "proxy_s_per_set": per_set, "trial_s": trial_s[recipe],
                         "cost_ratio": per_set / trial_s[recipe]})
    return rows


def plot(deg: dict, values: dict, rows: list[dict], path: Path) -> None:
    """One panel per recipe x capability: the best proxy against the measured degradation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["recipe"], r["capability"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (recipe, cap) in zip(axes[0], panels):
        best = max((r for r in rows if r["recipe"] == recipe and r["capability"] == cap),
                   key=lambda r: -np.inf if math.isnan(r["spearman"]) else r["spearman"])
        key = (cap, best["proxy"], recipe if best["proxy"] == "layer_error" else "")
        names = [n for n in sorted(deg[recipe]) if n in values and key in values[n]]
        xs = [abs(values[n][key]) for n in names]
        ys = [100 * deg[recipe][n][cap] for n in names]
        ax.scatter(xs, ys, s=14)
        for n, x, y in zip(names, xs, ys):
            ax.annotate(n, (x, y), fontsize=5, alpha=0.7)
        ax.set_title(f"{recipe} / {cap}\nrho = {best['spearman']:.2f} [{best['ci95'][0]:.2f}, {best['ci95'][1]:.2f}]",
                     fontsize=8)
        ax.set_xlabel(best["proxy"], fontsize=8)
        ax.set_ylabel("degradation vs dense (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def table(rows: list[dict]) -> str:
    lines = ["| recipe | capability | proxy | sets | Spearman | 95% CI | s/set | cost ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['capability']} | {r['proxy']} | {r['sets']} | {r['spearman']:.2f} | "
                     f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | {r['proxy_s_per_set']:.3g} | {r['cost_ratio']:.2%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", required=True, type=Path)
    ap.add_argument("--score", type=Path, required=True, help="score output folder over the pool's sets "
                    "(coverage and moments from the pool's stored statistics)")
    ap.add_argument("--external", type=Path, help="score output folder over the same sets as bare .jsonl files "
                    "(one forward pass each; all proxies, layer_error included); without it only the pool "
                    "sets' proxies (coverage, moments) are correlated")
    ap.add_argument("--records", required=True, type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    deg, trial_s, failed = degradations(args.sweep / "trials")
    # pool sets: coverage and moments from the pool; layer_error always needs the set's forward pass
    values, cost = merge(load_scores(args.score), *([load_scores(args.external, {"layer_error"})] if args.external
                                                    else []))
    ext_values, ext_cost = load_scores(args.external) if args.external else ({}, {})
    all_deg = deg
    deg, waiting = complete(deg, set(values))
    for recipe, missing in sorted(waiting.items()):
        print(f"{recipe}: not correlated yet, {len(missing)} set(s) without a trial: {', '.join(missing)}")
    result = {"command": " ".join(["python", *sys.argv]), "trial_s": trial_s, "failed_trials": failed,
              "degradation": all_deg, "incomplete_recipes": waiting, "pool": correlate(deg, values, cost, trial_s),
              "external": correlate(deg, ext_values, ext_cost, trial_s) if args.external else None}
    trials = args.records / "trials"
    trials.mkdir(parents=True, exist_ok=True)
    for p in sorted((args.sweep / "trials").glob("*.json")):
        shutil.copyfile(p, trials / p.name)
    (args.records / "correlation.json").write_text(json.dumps(result, indent=1))
    print(table(result["pool"]))
    if args.external:
        print("\nexternal sets (bare .jsonl, one forward pass each):\n" + table(result["external"]))
    if args.plot:
        plot(deg, values, result["pool"], args.plot)


if __name__ == "__main__":
    main()
