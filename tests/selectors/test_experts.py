"""The expert-coverage repair (selectors/experts.py): exact k, quota groups, growth, reports."""

import numpy as np

from cola_ray.selectors.experts import cover, coverage

LAYOUT = {"layers": [0, 1], "experts": [3, 3]}


def _pool() -> np.ndarray:
    """8 candidates x 6 experts; expert 5 is reached only by rows 6 and 7, expert 2 by none."""
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 6, size=(8, 6))
    counts[:, 2] = 0
    counts[:, 5] = 0
    counts[6, 5], counts[7, 5] = 4, 3
    return counts


def test_coverage_summarises_tokens_and_zero_experts_per_layer():
    c = coverage(np.array([0, 4, 8, 1, 0, 0]), LAYOUT)
    assert c["tokens_per_expert"]["min"] == 0 and c["tokens_per_expert"]["median"] == 0.5
    assert c["zero_experts"] == 3 and c["zero_experts_per_layer"] == {"0": 1, "1": 2}


def test_swaps_keep_k_and_reach_every_expert_the_pool_reaches():
    counts = _pool()
    out = cover(counts, [0, 1, 2], np.zeros(8, np.int64), need=5, allow_more=False)
    assert len(out["chosen"]) == 3 and len(set(out["chosen"])) == 3
    totals = counts[out["chosen"]].sum(0)
    reached = counts.sum(0) > 0
    assert (totals[reached] >= np.minimum(counts.sum(0), 5)[reached]).all()
    assert out["swaps"] and not out["added"] and out["target"][2] == 0


def test_swaps_stay_inside_the_quota_group():
    counts = _pool()
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # rows 6 and 7 (the only way to expert 5) are group 1
    out = cover(counts, [0, 1, 4], groups, need=5, allow_more=False)
    assert sorted(groups[out["chosen"]]) == [0, 0, 1]
    only_zero = cover(counts, [0, 1, 2], groups, need=5, allow_more=False)  # group 1 has no quota: stays out
    assert all(groups[r] == 0 for r in only_zero["chosen"])


def test_allow_more_adds_instead_of_swapping_and_keeps_the_selectors_choice():
    counts = _pool()
    out = cover(counts, [0, 1], np.zeros(8, np.int64), need=6, allow_more=True)
    assert out["chosen"][:2] == [0, 1] and len(out["chosen"]) == 2 + len(out["added"]) > 2
    assert not out["swaps"]
    assert counts[out["chosen"]].sum(0)[5] >= 6


def test_nothing_to_do_changes_nothing_and_repairs_are_deterministic():
    counts = _pool()
    assert cover(counts, [6, 7, 0], np.zeros(8, np.int64), need=1, allow_more=False)["chosen"] == [6, 7, 0]
    a = cover(counts, [0, 1, 2], np.zeros(8, np.int64), need=9, allow_more=False)
    b = cover(counts, [0, 1, 2], np.zeros(8, np.int64), need=9, allow_more=False)
    assert a["chosen"] == b["chosen"] and a["swaps"] == b["swaps"]
