"""Every model-free selector: k distinct candidates, deterministic, independent of pool order and
sharding, and the same calibration.jsonl layout as curate."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest

from cola_ray.errors import UserError
from cola_ray.selectors import KEYS, SelectorContext, calibration_lines, get_selector, list_selectors
from cola_ray.selectors.lexical import greedy_diverse, word_types
from cola_ray.selectors.sampling import proportional_quotas

MODEL_FREE = ["cola", "random", "random-stratified", "lexical", "moment-match", "outlier-coverage", "cluster-herding"]
CLUSTERED = ("cola", "cluster-herding")
K = 12


def _select(name, pool, seed=0, k=K):
    params = {"kmeans_iters": 10, "kmeans_restarts": 2} if name in CLUSTERED else None
    return get_selector(name).select(pool, k, SelectorContext(model="unused", seed=seed, params=params)).table


def test_registry_lists_the_built_in_selectors():
    assert {"cola", "random", "random-stratified", "lexical", "perplexity", "perplexity-low",
            "perplexity-high"} <= set(list_selectors())
    with pytest.raises(UserError, match="unknown selector 'kmeans'"):
        get_selector("kmeans")


@pytest.mark.parametrize("name", MODEL_FREE)
def test_k_distinct_kept_candidates_deterministic_and_order_independent(name, pool, shuffled_pool):
    first = _select(name, pool)
    ids = first.column("id").to_pylist()
    kept = set(pool.read().column("id").to_pylist())
    assert len(ids) == K == len(set(ids)) and set(ids) <= kept  # dropped rows are never candidates
    assert _select(name, pool).equals(first)
    assert _select(name, shuffled_pool).equals(first)


@pytest.mark.parametrize("name", MODEL_FREE)
def test_same_calibration_layout_as_curate(name, pool):
    selection = _select(name, pool)
    lines = [json.loads(x) for x in calibration_lines(selection, pool.read(["text", "source", "num_tokens"])).splitlines()]
    assert len(lines) == K and all(tuple(r) == KEYS for r in lines)
    assert all(r["text"] and r["source"] in ("news", "code") for r in lines)
    if name in CLUSTERED:  # cluster ids, distances (or errors), cluster sizes
        assert sorted(r["cluster"] for r in lines) == list(range(K))
        assert all(r["cluster_size"] >= 1 and r["distance"] >= 0 for r in lines)
    else:  # rank and score; no clusters
        assert [r["cluster"] for r in lines] == list(range(K)) and all(r["cluster_size"] is None for r in lines)
        assert all(isinstance(r["distance"], float) for r in lines)


def test_seeds_change_random_selections_but_not_seed_free_ones(pool):
    for name in ("random", "random-stratified", "cola", "outlier-coverage", "cluster-herding"):
        assert get_selector(name).uses_seed
        assert _select(name, pool, 0).column("id") != _select(name, pool, 1).column("id")
    for name in ("lexical", "moment-match"):
        assert not get_selector(name).uses_seed
        assert _select(name, pool, 0).equals(_select(name, pool, 1))


def test_random_is_the_k_smallest_keys_so_a_larger_k_extends_a_smaller_one(pool):
    small, large = _select("random", pool, k=5), _select("random", pool, k=K)
    assert large.column("id").to_pylist()[:5] == small.column("id").to_pylist()
    scores = large.column("distance").to_pylist()
    assert scores == sorted(scores) and all(0 <= s < 1 for s in scores)


def test_stratified_quotas_follow_the_candidate_mix(pool):
    # 60 news and 30 code candidates: 12 samples -> 8 news and 4 code, for every seed
    for seed in range(3):
        rows = pool.read(["source"])
        chosen = set(_select("random-stratified", pool, seed).column("id").to_pylist())
        got = Counter(s for i, s in zip(rows.column("id").to_pylist(), rows.column("source").to_pylist()) if i in chosen)
        assert got == {"news": 8, "code": 4}


@pytest.mark.parametrize("counts, k, expected", [
    ({"a": 50, "b": 30, "c": 20}, 10, {"a": 5, "b": 3, "c": 2}),
    ({"a": 1, "b": 1, "c": 1}, 2, {"a": 1, "b": 1, "c": 0}),  # equal remainders: by name
    ({"a": 2, "b": 98}, 10, {"a": 0, "b": 10}),
    ({"a": 3, "b": 3}, 10, {"a": 3, "b": 3}),  # k larger than the pool: everything
])
def test_proportional_quotas(counts, k, expected):
    assert proportional_quotas(counts, k) == expected


def test_lexical_prefers_new_words_over_repeats():
    docs = ["the cat sat on the mat"] * 3 + ["quantum chromodynamics binds quarks", "the dog sat on the log"]
    ids = [f"d{i}" for i in range(len(docs))]
    chosen, gains = greedy_diverse(ids, [word_types(d) for d in docs], 3)
    assert sorted(chosen[:2]) != [0, 1]  # the copies of one text are not picked together first
    assert len({docs[j] for j in chosen}) == 3 and gains == sorted(gains, reverse=True)


def test_lexical_covers_more_word_types_than_random(pool):
    def types(name):
        ids = set(_select(name, pool).column("id").to_pylist())
        rows = pool.read(["text"]).to_pylist()
        return len(set().union(*(word_types(r["text"]) for r in rows if r["id"] in ids)))

    assert types("lexical") > max(types("random"), types("random-stratified"))


def test_registry_cola_matches_nearest_to_centroid(pool):
    """cola's pick in each cluster is the member nearest that cluster's centroid."""
    from cola_ray.stages import cluster

    selection = _select("cola", pool)
    table = pool.read(["vector"])
    assert set(selection.column("cluster").to_pylist()) == set(range(K))
    assert sum(selection.column("cluster_size").to_pylist()) == table.num_rows
    assert isinstance(selection.column("distance"), pa.ChunkedArray)
    assert cluster.vectors_of(table).shape == (table.num_rows, 8)


def test_lazy_greedy_equals_plain_greedy(pool):
    rows = pool.read(["text"]).to_pylist()
    ids, docs = [r["id"] for r in rows], [word_types(r["text"]) for r in rows]
    weights = {t: __import__("math").log1p(n) for t, n in sum(docs, Counter()).items()}
    covered, plain = set(), []
    for _ in range(K):
        best = min((j for j in range(len(ids)) if j not in plain),
                   key=lambda j: (-round(sum(weights[t] for t in docs[j] if t not in covered), 9), ids[j]))
        plain.append(best)
        covered.update(docs[best])
    assert greedy_diverse(ids, docs, K)[0] == plain
