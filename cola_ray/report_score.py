"""The end-of-run table and the per-capability bar plots of `cola-ray score`."""

from __future__ import annotations

import io

from cola_ray.report import table


def _label(row: dict) -> str:
    return f"{row['proxy']}[{row['recipe']}]" if row["recipe"] else row["proxy"]


def score_summary(manifest: dict) -> str:
    """One line per set x capability, one column per proxy (arrows: which way is better)."""
    rows = manifest["scores"]
    labels = list(dict.fromkeys(_label(r) for r in rows))
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r["set"], r["capability"]), {})[_label(r)] = r["value"]
    better = {_label(r): "v" if r["lower_is_better"] else "^" for r in rows}
    body = [[s, c, *[round(v.get(lab, float("nan")), 4) for lab in labels]] for (s, c), v in cells.items()]
    sets = manifest["sets"]
    notes = [f"{n}: {v['chunks']} chunks, {v['tokens']} tokens, statistics from {v['statistics_from']}"
             + (f", {v['truncated']} cut to --seq-len" if v["truncated"] else "")
             + (f", {v['empty']} empty" if v["empty"] else "")
             + (f"; experts: min {v['experts']['tokens_per_expert']['min']} tokens, median "
                f"{v['experts']['tokens_per_expert']['median']:.0f}, {v['experts']['zero_experts']} with no token"
                if v.get("experts") else "") for n, v in sets.items()]
    times = "  ".join(f"{k} {v:.1f}s" for k, v in manifest["timings_s"].items())
    return "\n".join([table(["set", "capability", *[f"{lab} {better[lab]}" for lab in labels]], body),
                      "(v: lower is better, ^: higher is better)", *notes, f"time: {times}",
                      f"output: {manifest['out']}  ({', '.join(manifest['artifacts'])}, manifest.json)"])


def score_plot(rows: list[dict], capability: str) -> bytes:
    """One panel per proxy, a horizontal bar per set (names readable at any number of sets),
    the best set's bar highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["capability"] == capability]
    labels = list(dict.fromkeys(_label(r) for r in mine))
    sets = list(dict.fromkeys(r["set"] for r in mine))
    cols = max(1, len(labels))
    height = 1.2 + 0.18 * len(sets)
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols + 1.8, height), squeeze=False, sharey=True)
    for n, (ax, lab) in enumerate(zip(axes[0], labels)):
        vals = {r["set"]: r["value"] for r in mine if _label(r) == lab}
        lower = next(r["lower_is_better"] for r in mine if _label(r) == lab)
        ys = [vals.get(s, float("nan")) for s in sets]
        known = [v for v in ys if v == v]
        best = (min if lower else max)(known) if known else None
        ax.barh(range(len(sets)), ys, color=["tab:orange" if v == best else "tab:blue" for v in ys])
        if n == 0:  # the axes share y: labels once, on the left
            ax.set_yticks(range(len(sets)), sets, fontsize=7)
            ax.invert_yaxis()
        else:
            ax.tick_params(labelleft=False)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{lab}\n({'lower' if lower else 'higher'} is better)", fontsize=8)
    fig.suptitle(f"cola-ray score: {capability} (orange: best set)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
