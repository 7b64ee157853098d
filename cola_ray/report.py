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
    c = manifest["counts"]
    per = c["per_source"]
    rows = [[s, v["documents"], v["chunks"], v["embedded"], v["selected"]] for s, v in per.items()]
    rows.append(["total", c["documents"], c["chunks"], c["embedded"], c["selected"]])
    dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items()) or "none"
    times = "  ".join(f"{k} {v:.1f}s" for k, v in manifest["timings_s"].items())
    km = manifest["kmeans"]
    parts = [
        table(["source", "documents", "chunks", "embedded", "selected"], rows),
        f"dropped: {dropped}",
        f"k-means: k={km['k']} objective={km['objective']:.4f} empty clusters={len(km['empty_clusters'])}",
        f"time: {times}  (total {sum(manifest['timings_s'].values()):.1f}s)",
        f"output: {manifest['out']}  (calibration.jsonl, embeddings/, centroids.npy, manifest.json)",
    ]
    return "\n".join(parts)
