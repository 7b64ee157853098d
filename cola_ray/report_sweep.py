"""The sweep's outputs: one results table (parquet + CSV), a markdown report aggregated over
seeds, PNG plots, and the CLI summaries of `cola-ray sweep` and `cola-ray curate --selector`.

Table: one row per trial (the dense reference included), with for every metric M
  score:M        the value
  retention:M    compressed/dense for higher-is-better metrics, dense/compressed for lower-is-
                 better ones (1.0 = nothing lost; cola_ray.evaluate.retention)
  degradation:M  how much worse, as a fraction of dense: compressed/dense - 1 for perplexity-like
                 metrics, 1 - compressed/dense for accuracies (cola_ray.evaluate.degradation)
plus status, error, the calibration set's identity (token_ids_sha256) and timings, and
  proxy:C/P[/R]  the set's `cola-ray score` proxy P for capability C (layer_error: per recipe R),
                 computed before the trials ran, so each row holds the prediction and the result.
Everything is written through cola_ray.storage, so --out may be s3://.
"""

from __future__ import annotations

import io
import math

from cola_ray import storage
from cola_ray.report import table

DENSE = "dense"
# Preferred headline metric of a suite, in order; other metrics stay in the table.
HEADLINE = ("word_perplexity", "nll_per_token", "pass@1", "acc_norm", "acc", "exact_match", "bits_per_byte")
TIMINGS = ("load", "tokenize", "compress", "evaluate", "total")


def _hib(records: list[dict]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for r in records:
        out.update(r.get("higher_is_better") or {})
    return out


def headline_metrics(records: list[dict], suites: list[str]) -> list[str]:
    """One metric per suite, in suite order: the shallowest key, by HEADLINE preference."""
    keys = sorted({k for r in records for k in (r.get("scores") or {})})
    out = []
    for suite in suites:
        mine = [k for k in keys if k.split("/")[0] == suite]
        if not mine:
            continue

        def rank(k: str):
            metric = k.rsplit("/", 1)[-1]
            return (k.count("/"), HEADLINE.index(metric) if metric in HEADLINE else len(HEADLINE), k)

        out.append(min(mine, key=rank))
    return out


def results_table(records: list[dict], proxies: dict[str, dict[str, float]] | None = None):
    """pandas DataFrame: one row per trial, scores + retention + degradation vs the dense trial
    (+ the set's proxies: set label -> {key: value}, from workflows.sweep.load_proxies)."""
    import pandas as pd

    from cola_ray.evaluate import degradation, retention

    dense = next((r for r in records if r["key"] == DENSE and r.get("status") == "ok"), None)
    dense_scores = (dense or {}).get("scores") or {}
    hib = _hib(records)
    metrics = sorted({k for r in records for k in (r.get("scores") or {})})
    proxy_keys = sorted({k for v in (proxies or {}).values() for k in v})
    rows = []
    for r in records:
        spec, cal = r.get("spec") or {}, r.get("calibration_set") or {}
        row = {"trial": r["key"], "status": r.get("status"), "error": r.get("error"),
               "set": spec.get("label"), "selector": spec.get("selector") or spec.get("label"),
               "seed": spec.get("seed"), "recipe": spec.get("recipe") or "none",
               "calibration": spec.get("calibration"), "samples": cal.get("samples"), "tokens": cal.get("tokens"),
               "token_ids_sha256": cal.get("token_ids_sha256"),
               "sparsity": (r.get("weights") or {}).get("sparsity")}
        for t in TIMINGS:
            row[f"time_{t}_s"] = (r.get("timings_s") or {}).get(t)
        scores = r.get("scores") or {}
        for m in metrics:
            v = scores.get(m)
            row[f"score:{m}"] = v
            ok = v is not None and m in dense_scores and m in hib
            row[f"retention:{m}"] = retention(dense_scores[m], v, hib[m]) if ok else None
            row[f"degradation:{m}"] = degradation(dense_scores[m], v, hib[m]) if ok else None
        for key in proxy_keys:
            row[f"proxy:{key}"] = (proxies or {}).get(spec.get("label"), {}).get(key)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    return df


def aggregate(df, metrics: list[str]):
    """mean, std (over seeds) and n per (recipe, selector) for each metric's score and degradation."""
    ok = df[(df["status"] == "ok") & (df["trial"] != DENSE)]
    cols = [f"score:{m}" for m in metrics] + [f"degradation:{m}" for m in metrics] + ["time_compress_s",
                                                                                          "time_evaluate_s"]
    cols = [c for c in cols if c in ok.columns]
    g = ok.groupby(["recipe", "selector"], sort=False)[cols]
    return g.mean(), g.std(ddof=1), g.size()


def _pm(mean, std, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    s = f"{mean:.{digits}f}"
    return s + (f" ± {std:.{digits}f}" if std is not None and not math.isnan(std) else "")


def _selector_order(df) -> list[str]:
    seen: list[str] = []
    for s in df["selector"]:
        if s != DENSE and s not in seen:
            seen.append(s)
    return seen


def markdown(df, metrics: list[str], settings: dict, calib_costs: list[list]) -> str:
    suites = settings.get("suites") or []
    mean, std, n = aggregate(df, metrics)
    dense = df[df["trial"] == DENSE]
    lines = ["# Sweep report", "",
             f"Model `{settings.get('model')}`; suites {', '.join(suites)} (limit {settings.get('eval_limit')}); "
             f"calibration: {settings.get('curate', {}).get('num_samples')} samples x "
             f"{settings.get('curate', {}).get('seq_len')} tokens.", "",
             "Cells: mean ± std over seeds of the score, and (in brackets) the mean degradation vs the dense "
             "model (compressed/dense - 1 for perplexity-like metrics: lower is better). Selectors that do "
             "not use the seed (lexical, perplexity) have one run (n = 1).", ""]
    head = ["recipe", "selector", "n"] + [m for m in metrics]
    rows = []
    if not dense.empty and dense.iloc[0]["status"] == "ok":
        rows.append(["-", "dense", 1] + [f"{dense.iloc[0][f'score:{m}']:.2f}" for m in metrics])
    for (recipe, selector) in mean.index:
        cells = []
        for m in metrics:
            mu, sd = mean.loc[(recipe, selector)].get(f"score:{m}"), std.loc[(recipe, selector)].get(f"score:{m}")
            dg = mean.loc[(recipe, selector)].get(f"degradation:{m}")
            cells.append(f"{_pm(mu, sd)} ({dg:+.1%})" if dg is not None and not math.isnan(dg) else _pm(mu, sd))
        rows.append([recipe, selector, int(n.loc[(recipe, selector)])] + cells)
    lines += [_md_table(head, rows), ""]
    # Composition: where each selector's samples came from (mean over its sets).
    comp = _composition(df)
    if comp:
        sources = sorted({s for c in comp.values() for s in c})
        lines += ["## Calibration sets: samples per source (mean over seeds)", "",
                  _md_table(["selector"] + sources, [[sel] + [f"{comp[sel].get(s, 0):.1f}" for s in sources]
                                                     for sel in comp]), ""]
    # Cost.
    ok = df[(df["status"] == "ok") & (df["trial"] != DENSE)]
    if not ok.empty:
        t = ok.groupby(["recipe"])[["time_compress_s", "time_evaluate_s", "time_total_s"]].mean()
        lines += ["## Time per trial (mean seconds)", "",
                  _md_table(["recipe", "compress", "evaluate", "total"],
                            [[r, f"{v.time_compress_s:.0f}", f"{v.time_evaluate_s:.0f}", f"{v.time_total_s:.0f}"]
                             for r, v in t.iterrows()]), ""]
    if calib_costs:
        lines += ["## Time to build the calibration sets (seconds)", "",
                  "A pool serves every selector; perplexity's selection includes its scoring pass (shared by "
                  "its variants).", "", _md_table(["step", "seconds"], calib_costs), ""]
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        lines += ["## Trials not ok (failed, or not run yet)", "", _md_table(["trial", "status", "error"],
                                                    [[r.trial, r.status, r.error] for r in failed.itertuples()]), ""]
    lines += ["Full per-trial table: `results.csv` / `results.parquet`; plots: `plots/`.", ""]
    return "\n".join(lines)


def _composition(df) -> dict[str, dict[str, float]]:
    import json

    out: dict[str, dict[str, float]] = {}
    seen_sets: dict[str, dict[str, dict]] = {}  # selector -> set label -> {source: samples}
    for r in df.itertuples():
        if r.trial == DENSE or not isinstance(getattr(r, "sources", None), str) or r.sources == "null":
            continue
        seen_sets.setdefault(r.selector, {})[r.set] = json.loads(r.sources)
    for sel, sets in seen_sets.items():
        srcs = {s for c in sets.values() for s in c}
        out[sel] = {s: sum(c.get(s, 0) for c in sets.values()) / len(sets) for s in srcs}
    return out


def _md_table(head: list, rows: list[list]) -> str:
    out = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def plot(df, metrics: list[str], recipe: str) -> bytes:
    """Grouped bars: degradation (%) vs dense per capability, one bar per selector, std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = df[(df["status"] == "ok") & (df["recipe"] == recipe)]
    selectors = _selector_order(ok)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(selectors))
    x = np.arange(len(metrics))
    for i, sel in enumerate(selectors):
        rows = ok[ok["selector"] == sel]
        vals = [rows[f"degradation:{m}"].astype(float) * 100 for m in metrics]
        mu = [v.mean() for v in vals]
        sd = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(x + (i - (len(selectors) - 1) / 2) * width, mu, width, yerr=sd, capsize=3, label=f"{sel} (n={len(rows)})")
    ax.set_xticks(x, [m.replace("/", "\n", 1) for m in metrics], fontsize=8)
    ax.set_ylabel("degradation vs dense (%), lower is better")
    ax.set_title(f"{recipe}: mean ± std over seeds")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def set_manifests(records: list[dict]):
    """(label, manifest) of each calibration set the trials used, once per set."""
    seen = set()
    for r in records:
        spec = r.get("spec") or {}
        uri, label = spec.get("calibration"), spec.get("label")
        if not uri or label in seen or not storage.exists(storage.join(uri, "manifest.json")):
            continue
        seen.add(label)
        yield label, storage.read_json(storage.join(uri, "manifest.json"))


def calibration_costs(out: str, records: list[dict]) -> list[list]:
    """Rows (what, seconds): each pool's curate run up to the candidate pool (ingest, chunking,
    dedup, the activation pass), then each calibration set's own selection step."""
    rows = []
    for uri in storage.list_files(storage.join(out, "pool"), "manifest.json"):
        if not uri.rsplit("/", 2)[-2].startswith("seed-"):  # pool/seed-<s>/manifest.json only
            continue
        t = storage.read_json(uri).get("timings_s") or {}
        pool = sum(v for k, v in t.items() if k not in ("cluster", "assign+select", "write", "validate"))
        rows.append([f"pool {uri.rsplit('/', 2)[-2]}: ingest, chunk, dedup, activations", f"{pool:.0f}"])
    for label, manifest in set_manifests(records):
        t = manifest.get("timings_s") or {}
        spent = sum(v for k, v in t.items() if k.startswith("select") or k in ("cluster", "assign+select"))
        rows.append([f"set {label}: selection", f"{spent:.1f}"])
    return rows


def expert_rows(records: list[dict]) -> list[list]:
    """MoE sweeps: per calibration set, its tokens per expert (min, p10, median), experts with no
    token, and what --min-tokens-per-expert changed (from the set's manifest)."""
    rows = []
    for label, manifest in set_manifests(records):
        ex = (manifest.get("selection") or {}).get("experts")
        if ex:
            t = ex["set"]["tokens_per_expert"]
            repair = (f"{len(ex['swaps'])} swaps" if not ex["allow_more"] else f"+{len(ex['added'])} samples") \
                if ex.get("min_tokens_per_expert") else "-"
            rows.append([label, t["min"], f"{t['p10']:.0f}", f"{t['median']:.0f}", ex["set"]["zero_experts"], repair])
    return rows


def write_report(out: str, records: list[dict], settings: dict, proxies: dict | None = None) -> list[str]:
    import json

    import pyarrow as pa

    df = results_table(records, proxies)
    df["sources"] = [json.dumps((r.get("calibration_set") or {}).get("sources")) if r.get("calibration_set") else None
                     for r in records]
    storage.write_parquet(storage.join(out, "results.parquet"), pa.Table.from_pandas(df, preserve_index=False))
    storage.write_text(storage.join(out, "results.csv"), df.to_csv(index=False))
    metrics = headline_metrics(records, settings.get("suites") or [])
    text = markdown(df, metrics, settings, calibration_costs(out, records))
    experts = expert_rows(records)
    if experts:
        text += "\n".join(["", "## Expert coverage of the calibration sets (MoE)", "",
                           _md_table(["set", "min tokens/expert", "p10", "median", "experts with no token",
                                      "--min-tokens-per-expert"], experts), ""])
    storage.write_text(storage.join(out, "report.md"), text)
    plots = []
    storage.delete(storage.join(out, "plots"))  # a plot of a recipe no longer in the sweep would mislead
    for recipe in [r for r in df["recipe"].unique() if r != "none"]:
        if metrics and ((df["recipe"] == recipe) & (df["status"] == "ok")).any():
            name = f"plots/degradation-{recipe}.png"
            storage.write_bytes(storage.join(out, name), plot(df, metrics, recipe))
            plots.append(name)
    return ["results.parquet", "results.csv", "report.md", *plots, "trials/", "calibration/", "pool/"]


def sweep_summary(manifest: dict) -> str:
    """The end-of-run lines `cola-ray sweep` prints."""
    t = manifest["trials"]
    df_lines = [f"trials: {t['total']} ({t['ok']} ok, {len(t['failed'])} failed/missing; "
                f"{t['reused']} reused from a previous run)"]
    if t["failed"]:
        df_lines.append("not ok: " + ", ".join(t["failed"][:10]) + (" ..." if len(t["failed"]) > 10 else ""))
    times = "  ".join(f"{k} {v:.1f}s" for k, v in manifest["timings_s"].items())
    df_lines += [f"time: {times}", f"output: {manifest['out']}  (report.md, results.csv/.parquet, plots/, trials/)"]
    return "\n".join(df_lines)
