"""Human-facing output: the end-of-run summary (tables) and plots."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def curate_summary(manifest: dict) -> str:
    """The end-of-run lines of a selection (curate with any selector): counts per source (and
    stage-1 quotas), drops, the coverage table, the selector's line, times, outputs."""
    c = manifest["counts"]
    per = c["per_source"]
    caps = manifest.get("capabilities")
    quota = (lambda s: [caps["quotas"].get(s, 0)]) if caps else (lambda s: [])
    rows = [[s, v["documents"], v["chunks"], v["embedded"], *quota(s), v["selected"]] for s, v in per.items()]
    rows.append(["total", c["documents"], c["chunks"], c["embedded"], *([sum(caps["quotas"].values())] if caps else []),
                 c["selected"]])
    dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items()) or "none"
    times = "  ".join(f"{k} {v:.1f}s" for k, v in manifest["timings_s"].items())
    parts = [table(["source", "documents", "chunks", "embedded", *(["quota"] if caps else []), "selected"], rows),
             f"dropped: {dropped}"]
    budget = (manifest.get("processing") or {}).get("budget")
    if budget:
        parts.append(f"candidate budget: {budget['kept']} documents read into chunking, {budget['skipped']} "
                     f"skipped ({budget['rule']})")
    for note in (manifest.get("processing") or {}).get("skipped_files") or []:
        parts.append(f"skipped the rest of {note['file']} (--skip-bad-files; {note['records_kept']} record(s) "
                     f"kept): {note['error']}")
    if caps:
        parts += ["", _coverage_table(caps), ""]
    lengths = manifest["selection"].get("tokens")
    parts += [
        selection_line(manifest["selection"]),
        *experts_lines(manifest["selection"].get("experts")),
        *([f"calibration tokens per sequence: min {lengths['min']}, median {lengths['median']}, max {lengths['max']} "
           f"(--seq-len {lengths['seq_len']}); tokenized in calibration.tokens.parquet and calibration/"]
          if lengths else []),
        f"time: {times}  (total {sum(manifest['timings_s'].values()):.1f}s)",
        f"output: {manifest['out']}  ({', '.join(a for a in manifest['artifacts'] if not a.startswith('work/'))}, "
        "manifest.json)",
    ]
    return "\n".join(parts)


def selection_line(sel: dict) -> str:
    """One line on how the set was chosen: the selector, k, its own figures (cola: k-means)."""
    d = sel.get("details") or {}
    line = f"selector: {sel['selector']} ({sel['description']}); k={sel['k']}"
    if "objective" in d:
        line += f"; k-means objective={d['objective']:.4f} empty clusters={len(d.get('empty_clusters', []))}"
    if d.get("groups") or sel.get("quotas"):
        line += f"; per-source quotas over {len([q for q in (sel.get('quotas') or {}).values() if q])} source(s)"
    return line + f"; {sel['seconds']:.1f}s"


def experts_lines(ex: dict | None) -> list[str]:
    """MoE expert coverage of the set against the pool's (and what --min-tokens-per-expert did)."""
    if not ex:
        return []
    tp = lambda c: (f"min {c['tokens_per_expert']['min']}, p10 {c['tokens_per_expert']['p10']:.0f}, "  # noqa: E731
                    f"median {c['tokens_per_expert']['median']:.0f}; {c['zero_experts']} with no token")
    n = ex["experts_per_layer"]
    lines = [f"experts ({len(ex['layers'])} MoE layers x {max(n)} experts, top-{ex.get('top_k') or '?'}): "
             f"tokens per expert in the set: {tp(ex['set'])}; in the pool: {tp(ex['pool'])}"]
    if ex["unreached_by_pool"]["count"]:
        names = ex["unreached_by_pool"]["names"]
        lines.append(f"  the pool never reaches {ex['unreached_by_pool']['count']} expert(s): {', '.join(names)}"
                     + (" ..." if len(names) < ex["unreached_by_pool"]["count"] else ""))
    need = ex.get("min_tokens_per_expert")
    if need:
        how = (f"added {len(ex['added'])} chunk(s): k grew {ex['k_before']} -> {ex['k_final']}" if ex["allow_more"]
               else f"{len(ex['swaps'])} swap(s), k={ex['k_final']} kept")
        lines.append(f"  --min-tokens-per-expert {need}: {how}; before: {tp(ex['before'])}; "
                     f"{ex['still_below_min']['count']} expert(s) still below {need}, "
                     f"{ex['pool_below_min']['count']} that the pool gives fewer (all of theirs taken where possible)")
    return lines


def _coverage_table(caps: dict) -> str:
    """Stage 1's coverage matrix with weights, weighted usefulness and quotas."""
    import numpy as np

    from cola_ray.stages.sources import format_coverage_table

    srcs, names = list(caps["coverage"]), caps["capabilities"]
    matrix = np.array([[caps["coverage"][s][c] for c in names] for s in srcs])
    head = f"coverage ({caps['deployment']} deployment{', target ' + caps['target'] if caps.get('target') else ''}):"
    return head + "\n" + format_coverage_table(matrix, srcs, names, caps["weights"], caps["quotas"], caps["excluded"])


def activation_space_png(candidates: tuple, probes: tuple, selected: tuple) -> bytes:
    """A 2-D PCA of the projected activation space: candidates (dots), probe sets (crosses) and
    the selected chunks (ringed), coloured by source / capability. Each argument is (vectors
    [n, d], labels). PCA is fitted on candidates and probes together."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(np.vstack([candidates[0], probes[0]]))
    labels = sorted(set(candidates[1]) | set(probes[1]) | set(selected[1]))
    colour = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    for (vectors, names), style in ((candidates, dict(marker=".", s=14, alpha=0.35)),
                                    (probes, dict(marker="x", s=28, alpha=0.8)),
                                    (selected, dict(marker="o", s=60, edgecolors="black", linewidths=1.2))):
        if len(names) == 0:
            continue
        xy = pca.transform(vectors)
        for name in sorted(set(names)):
            mask = np.array([n == name for n in names])
            kind = {".": "candidates", "x": "probes", "o": "selected"}[style["marker"]]
            ax.scatter(xy[mask, 0], xy[mask, 1], color=colour[name], label=f"{name} ({kind})", **style)
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%})")
    ax.set_title("activation space: candidates, probes and the selected chunks")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
