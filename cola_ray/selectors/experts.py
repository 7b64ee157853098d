"""Expert coverage of a calibration set (MoE models), and the repair that guarantees it.

`coverage` summarises how many calibration tokens each expert of each MoE layer receives (the
pool's per-chunk `expert_tokens`, stages/experts.py, summed over a set). `cover` changes a
selection so that every expert the pool reaches gets at least `need` tokens:

- by default it **swaps**: greedily, the candidate that fills most of the remaining deficit
  comes in and the selected chunk of the *same quota group* (source, when stage-1 quotas split
  the set; the whole set otherwise) whose removal costs least goes out, while a swap lowers the
  total deficit; k never changes;
- with `allow_more` it **adds** the candidate that fills most of the deficit until none is left
  (or nothing helps), keeping every chunk the selector chose; k grows, and the report says by how
  much. Added chunks count against their source's quota in the report, not in the quota plan.

An expert whose pool total is below `need` is asked for all the pool has; one the pool never
reaches cannot be helped and is named in the report. Greedy with exact integer deficits,
deterministic (ties go to the lower pool row, i.e. the smaller chunk id). Written by hand: no
library solves this small covering problem with group constraints.
Memory: the pool's counts as one int32 [candidates x experts] matrix (e.g. 100k chunks x 48
layers x 128 experts = 2.5 GB): fine on a head node for the pools of this project, noted for
million-chunk MoE pools.
"""

from __future__ import annotations

import numpy as np

SWAP_CANDIDATES = 16  # best-gain candidates tried per step (each with its cheapest removal)


def slot_names(layout: dict) -> list[str]:
    """`layer<L>/expert<E>` for each count position of `expert_tokens`."""
    return [f"layer{layer}/expert{e}" for layer, n in zip(layout["layers"], layout["experts"]) for e in range(n)]


def coverage(totals: np.ndarray, layout: dict) -> dict:
    """Tokens per expert of one set (or the pool): min, 10th percentile, median over all
    experts, and experts with zero tokens per MoE layer."""
    totals = np.asarray(totals, np.int64)
    zeros, start = {}, 0
    for layer, n in zip(layout["layers"], layout["experts"]):
        zeros[str(layer)] = int((totals[start:start + n] == 0).sum())
        start += n
    return {"tokens_per_expert": {"min": int(totals.min()), "p10": float(np.percentile(totals, 10)),
                                  "median": float(np.median(totals))},
            "zero_experts": int(sum(zeros.values())), "zero_experts_per_layer": zeros,
            "tokens": int(totals.sum())}


def _deficit(totals: np.ndarray, target: np.ndarray) -> int:
    return int(np.maximum(target - totals, 0).sum())


def cover(counts: np.ndarray, chosen: list[int], groups: np.ndarray, need: int, allow_more: bool) -> dict:
    """counts [n, experts] int (pool rows), chosen: row indices of the selection, groups [n]:
    each row's quota group. Returns {"chosen": new row list (replacements in place, additions
    at the end), "swaps": [(out, in)], "added": [rows], "target": per-expert target}."""
    counts = np.asarray(counts, np.int64)
    target = np.minimum(counts.sum(0), need)
    chosen = list(chosen)
    inside = np.zeros(len(counts), bool)
    inside[chosen] = True
    totals = counts[chosen].sum(0)
    eligible = np.isin(groups, groups[chosen])  # a source without a quota stays out
    swaps, added = [], []
    while True:
        short = np.nonzero(totals < target)[0]
        if len(short) == 0:
            break
        gap = target[short] - totals[short]
        gain = np.minimum(counts[:, short], gap).sum(1)
        gain[inside | ~eligible] = 0
        if gain.max() <= 0:
            break
        if allow_more:
            best = int(np.argmax(gain))
            chosen.append(best)
            added.append(best)
            inside[best] = True
            totals = totals + counts[best]
            continue
        move = _best_swap(counts, chosen, groups, inside, totals, target, gain)
        if move is None:
            break
        pos, row = move
        out = chosen[pos]
        swaps.append((out, row))
        chosen[pos] = row
        inside[out], inside[row] = False, True
        totals = totals - counts[out] + counts[row]
    return {"chosen": chosen, "swaps": swaps, "added": added, "target": target}


def _best_swap(counts, chosen, groups, inside, totals, target, gain):
    """(position in chosen, incoming row) of the swap that lowers the deficit most, or None."""
    now = _deficit(totals, target)
    order = np.lexsort((np.arange(len(gain)), -gain))[:SWAP_CANDIDATES]
    chosen_arr = np.asarray(chosen)
    best, best_after = None, now
    for row in order:
        if gain[row] <= 0:
            break
        mates = np.nonzero(groups[chosen_arr] == groups[row])[0]
        if len(mates) == 0:
            continue
        with_row = totals + counts[row]
        after = np.maximum(target - (with_row - counts[chosen_arr[mates]]), 0).sum(1)
        pick = len(after) - 1 - int(np.argmin(after[::-1]))  # of equal cost, the one chosen last (lowest rank)
        if after[pick] < best_after:
            best, best_after = (int(mates[pick]), int(row)), int(after[pick])
    return best
