"""MoE expert coverage in the one selection path: the manifest's `selection.experts` section, the
`--min-tokens-per-expert` repair (selectors/experts.py) applied to any selector's choice, and
the coverage plot. A pool of a dense model has no expert counts: nothing here runs for it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray.errors import UserError
from cola_ray.pool import Pool
from cola_ray.selectors import Selection
from cola_ray.selectors.experts import cover, coverage, slot_names

PLOT = "expert_coverage.png"
NAMED = 20  # experts named in the manifest's lists (the counts say how many there are)


def pool_counts(pool: Pool, layout: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The kept chunks' ids, sources and [n, experts] routed-token counts, sorted by id."""
    table = pool.read(["source", "expert_tokens"])
    col = table.column("expert_tokens")
    if col.null_count:
        raise UserError(f"pool {pool.folder}: {col.null_count} chunk(s) without expert counts (embedded by an "
                        f"older cola-ray); embed into a new --out")
    width = sum(layout["experts"])
    counts = pc.list_flatten(col).to_numpy(zero_copy_only=False).reshape(table.num_rows, width)
    return table.column("id").to_pylist(), np.asarray(table.column("source").to_pylist(), dtype=object), counts


def apply(pool: Pool, selection: Selection, quotas: dict | None, need: int, allow_more: bool,
          ) -> tuple[Selection, dict | None, np.ndarray | None]:
    """The selection after the expert-coverage repair (when `need` > 0), the manifest section
    and the final set's tokens per expert (for `plot`); None, None for a dense model's pool."""
    layout = pool.experts_layout()
    if layout is None:
        if need:
            raise UserError(f"--min-tokens-per-expert {need}: pool {pool.folder} has no expert counts (a dense "
                            f"model, or one whose MoE layers cola-ray does not recognise)")
        return selection, None, None
    ids, sources, counts = pool_counts(pool, layout)
    row = {chunk: i for i, chunk in enumerate(ids)}
    chosen = [row[c] for c in selection.table.column("id").to_pylist()]
    groups = (np.unique(sources, return_inverse=True)[1] if quotas is not None else np.zeros(len(ids), np.int64))
    names = slot_names(layout)
    totals = counts.sum(0)
    final = counts[chosen].sum(0)
    section = {"layers": layout["layers"], "experts_per_layer": layout["experts"], "top_k": layout.get("top_k"),
               "min_tokens_per_expert": need, "allow_more": allow_more,
               "pool": coverage(totals, layout), "set": coverage(final, layout),
               "unreached_by_pool": _named(names, totals == 0)}
    if need:
        repaired = cover(counts, chosen, groups, need, allow_more)
        final = counts[repaired["chosen"]].sum(0)
        section["before"] = section["set"]
        section["set"] = coverage(final, layout)
        short = (totals > 0) & (totals < need)
        section.update({
            "swaps": [{"out": ids[o], "in": ids[i]} for o, i in repaired["swaps"]],
            "added": [ids[i] for i in repaired["added"]],
            "k_before": len(chosen), "k_final": len(repaired["chosen"]),
            "pool_below_min": _named(names, short),
            "still_below_min": _named(names, (final < need) & (totals >= need)),
        })
        selection = Selection(_rewrite(selection.table, [ids[i] for i in repaired["chosen"]]),
                              {**selection.details, "expert_repair": {"swaps": len(repaired["swaps"]),
                                                                      "added": len(repaired["added"])}},
                              selection.artifacts)
    return selection, section, final


def _named(names: list[str], mask: np.ndarray) -> dict:
    hit = [n for n, m in zip(names, mask) if m]
    return {"count": len(hit), "names": hit[:NAMED]}


def _rewrite(table: pa.Table, new_ids: list[str]) -> pa.Table:
    """The selection table with swapped-in chunks in their predecessors' rows (cluster kept,
    distance and cluster_size null: the selector did not score them) and added chunks at the end
    (cluster -1)."""
    old = table.to_pylist()
    rows = []
    for i, chunk in enumerate(new_ids):
        if i < len(old):
            rows.append(old[i] if old[i]["id"] == chunk else {**old[i], "id": chunk, "distance": None,
                                                              "cluster_size": None})
        else:
            rows.append({"id": chunk, "cluster": -1, "distance": None, "cluster_size": None})
    return pa.Table.from_pylist(rows, schema=table.schema)


def plot(section: dict, totals: np.ndarray, k: int) -> bytes:
    """Tokens per expert of the calibration set of `k` samples (`totals`, from `apply`), one row per MoE layer (log colour scale;
    experts with no token marked), beside each layer's fewest tokens of an expert (and N)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = {"layers": section["layers"], "experts": section["experts_per_layer"]}
    width = max(layout["experts"])
    grid = np.full((len(layout["layers"]), width), np.nan)
    start = 0
    for r, n in enumerate(layout["experts"]):
        grid[r, :n] = totals[start:start + n]
        start += n
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(11, 0.35 * len(grid) + 2.5), dpi=110,
                                   gridspec_kw={"width_ratios": [4, 1]})
    image = ax.imshow(np.log10(1 + grid), aspect="auto", cmap="viridis", interpolation="nearest")
    zr, zc = np.nonzero(grid == 0)
    ax.scatter(zc, zr, marker="x", color="red", s=18, label="no token")
    ax.set_yticks(range(len(grid)), [str(x) for x in layout["layers"]])
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    need = section.get("min_tokens_per_expert") or 0
    ax.set_title(f"calibration tokens per expert (log10(1+n)); k={k}"
                 + (f", --min-tokens-per-expert {need}" if need else ""))
    if len(zr):
        ax.legend(loc="upper right", fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.03)
    y = np.arange(len(grid))
    bars.barh(y, np.nanmin(grid, 1), height=0.6, color="tab:blue")
    zeros = section["set"]["zero_experts_per_layer"]
    bars.set_yticks(y, [f"{x} ({zeros[str(x)]} at 0)" for x in layout["layers"]])
    bars.invert_yaxis()
    if need:
        bars.axvline(need, color="red", linestyle="--", label=f"N={need}")
        bars.legend(fontsize=7)
    bars.set_xlabel("fewest tokens of an expert")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
