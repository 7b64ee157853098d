"""Stage 1: coverage ranks the matching source first; quotas always add up, respect candidate
counts, follow the deployment's weights and skip sources that cover nothing."""

from __future__ import annotations

import numpy as np
import pytest

from cola_ray.errors import UserError
from cola_ray.stages.sources import (
    Coverage, Profile, activation_similarity, allocate_quotas, capability_weights,
    coverage_matrix, format_coverage_table, token_similarity,
)

D, VOCAB, BLOCK = 32, 400, 100
CAPS = ("code", "math", "prose")


def _profile(rng, centers, mix, n, token_blocks, common):
    """n vectors around a mixture of centers (plus the shared offset LLM states have), and
    unigram counts spread over the given token blocks."""
    which = rng.choice(len(centers), size=n, p=mix)
    vectors = common + np.asarray(centers)[which] + 0.3 * rng.normal(size=(n, D))
    counts = np.zeros(VOCAB)
    for b in token_blocks:
        counts[b * BLOCK:(b + 1) * BLOCK] += rng.poisson(20, size=BLOCK)
    return Profile(vectors, counts)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    common = 24.0 * np.ones(D) / np.sqrt(D)
    centers = {c: rng.normal(size=D) for c in CAPS}
    junk_center = -sum(centers.values())
    caps = {c: _profile(rng, [centers[c]], [1.0], 20, [i], common) for i, c in enumerate(CAPS)}
    sources = {
        "web": _profile(rng, [centers["prose"], centers["code"]], [0.8, 0.2], 100, [2, 0], common),
        "github": _profile(rng, [centers["code"]], [1.0], 100, [0], common),
        "mathqa": _profile(rng, [centers["math"]], [1.0], 100, [1], common),
        "junk": _profile(rng, [junk_center], [1.0], 100, [3], common),
    }
    return sources, caps


@pytest.fixture(scope="module")
def coverage(world):
    return coverage_matrix(*world)


def test_shapes_labels_and_range(coverage):
    matrix, sources, caps = coverage
    assert matrix.shape == (4, 3)
    assert sources == ["web", "github", "mathqa", "junk"] and caps == list(CAPS)
    assert np.all((matrix >= 0) & (matrix <= 1))


def test_matching_source_ranks_first(coverage):
    matrix, sources, caps = coverage
    best = {c: sources[int(np.argmax(matrix[:, j]))] for j, c in enumerate(caps)}
    assert best == {"code": "github", "math": "mathqa", "prose": "web"}
    assert matrix[sources.index("junk")].max() < 0.05


def test_centering_removes_the_shared_offset(world):
    sources, caps = world
    raw = activation_similarity(sources["mathqa"].vectors, caps["code"].vectors)
    assert raw > 0.9  # every raw cosine is high: the offset dominates
    centered = coverage_matrix(sources, caps, alpha=1.0)
    assert centered.matrix[2, 0] < 0.2 < 0.8 < centered.matrix[1, 0]


def test_token_similarity_bounds():
    rng = np.random.default_rng(1)
    a = rng.poisson(5, size=(1, 1000)).astype(float)
    disjoint = np.zeros((1, 1000))
    disjoint[0, :10] = 1
    a[0, :10] = 0
    assert token_similarity(a, a)[0, 0] == pytest.approx(1.0)
    assert token_similarity(a, disjoint)[0, 0] < 0.05
    b = a + rng.poisson(1, size=a.shape)
    assert token_similarity(a, b)[0, 0] == pytest.approx(token_similarity(b, a)[0, 0])
    assert 0.5 < token_similarity(a, b)[0, 0] < 1.0


def test_mapping_token_counts_match_dense(world):
    sources, caps = world
    as_str = {n: Profile(p.vectors, {f"tok{i}": c for i, c in enumerate(p.token_counts) if c})
              for n, p in sources.items()}
    caps_str = {n: Profile(p.vectors, {f"tok{i}": c for i, c in enumerate(p.token_counts) if c})
                for n, p in caps.items()}
    as_int = {n: Profile(p.vectors, {i: c for i, c in enumerate(p.token_counts) if c})
              for n, p in sources.items()}
    dense = coverage_matrix(sources, caps, alpha=0.0).matrix
    # string tokens: vocabulary = union of the keys (here all 400 tokens occur somewhere)
    assert np.allclose(coverage_matrix(as_str, caps_str, alpha=0.0).matrix, dense)
    assert np.allclose(coverage_matrix(as_int, caps, alpha=0.0).matrix, dense)


def test_capability_weights():
    assert capability_weights(CAPS) == {"code": 1.0, "math": 1.0, "prose": 1.0}
    assert capability_weights(CAPS, "targeted", target="math") == {
        "code": 0.2, "math": 1.0, "prose": 0.2}
    assert capability_weights(CAPS, "targeted", target=["math", "code"], other_weight=0.1,
                              overrides={"prose": 0.5}) == {"code": 1.0, "math": 1.0, "prose": 0.5}
    with pytest.raises(UserError, match="'poetry'"):
        capability_weights(CAPS, overrides={"poetry": 1.0})
    with pytest.raises(UserError, match="'law'"):
        capability_weights(CAPS, "targeted", target="law")
    with pytest.raises(UserError, match="needs a target"):
        capability_weights(CAPS, "targeted")
    with pytest.raises(UserError, match="'niche'"):
        capability_weights(CAPS, "niche")
    with pytest.raises(UserError, match="'code'"):
        capability_weights(CAPS, overrides={"code": -1.0})


def test_general_quotas(coverage):
    plan = allocate_quotas(coverage, capability_weights(CAPS), 128,
                           {"web": 1000, "github": 1000, "mathqa": 1000, "junk": 1000})
    assert sum(plan.quotas.values()) == 128
    assert plan.quotas["junk"] == 0 and "junk" in plan.excluded
    assert "min_coverage" in plan.excluded["junk"]
    assert all(plan.quotas[s] > 20 for s in ("web", "github", "mathqa"))
    assert plan.uncovered == []


@pytest.mark.parametrize("target, best", [("math", "mathqa"), ("code", "github"),
                                          ("prose", "web")])
def test_targeted_deployment_favours_the_targets_best_source(coverage, target, best):
    weights = capability_weights(CAPS, "targeted", target=target)
    plan = allocate_quotas(coverage, weights, 64, dict.fromkeys(coverage.sources, 500))
    assert max(plan.quotas, key=plan.quotas.get) == best
    assert plan.quotas[best] > 32


def test_capacity_is_respected_and_excess_redistributed(coverage):
    available = {"web": 1000, "github": 5, "mathqa": 1000, "junk": 1000}
    plan = allocate_quotas(coverage, capability_weights(CAPS), 128, available)
    assert plan.quotas["github"] == 5 and sum(plan.quotas.values()) == 128
    with pytest.raises(UserError, match="num_samples=128"):
        allocate_quotas(coverage, capability_weights(CAPS), 128, dict.fromkeys(coverage.sources, 30))
    with pytest.raises(UserError, match="min_coverage"):  # enough only counting junk
        allocate_quotas(coverage, capability_weights(CAPS), 128,
                        {"web": 40, "github": 40, "mathqa": 40, "junk": 1000})


def test_temperature_sets_how_much_the_best_source_takes():
    cov = Coverage(np.array([[0.9], [0.8], [0.05]]), ["a", "b", "c"], ["x"])
    avail = dict.fromkeys("abc", 100)
    assert allocate_quotas(cov, {"x": 1}, 10, avail, temperature=1e-4).quotas == {
        "a": 10, "b": 0, "c": 0}
    assert allocate_quotas(cov, {"x": 1}, 10, avail, temperature=100.0).quotas == {
        "a": 5, "b": 5, "c": 0}
    plan = allocate_quotas(cov, {"x": 1}, 10, avail)  # 0.1 behind: e^-2 of the best's share
    assert plan.quotas == {"a": 9, "b": 1, "c": 0} and list(plan.excluded) == ["c"]


def test_ties_break_by_source_name():
    cov = Coverage(np.array([[0.5], [0.5]]), ["b", "a"], ["x"])
    assert allocate_quotas(cov, {"x": 1.0}, 3, {"a": 9, "b": 9}).quotas == {"b": 1, "a": 2}


def test_quotas_always_sum_exactly_in_random_cases():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n_src, n_cap = rng.integers(1, 9), rng.integers(1, 5)
        sources = [f"s{i}" for i in rng.permutation(n_src)]
        caps = [f"c{j}" for j in range(n_cap)]
        matrix = rng.uniform(0, 1, size=(n_src, n_cap)) * (rng.uniform(size=(n_src, 1)) > 0.2)
        weights = dict(zip(caps, rng.uniform(0, 1, size=n_cap)))
        available = dict(zip(sources, rng.integers(0, 60, size=n_src).tolist()))
        num = int(rng.integers(1, 200))
        cov = Coverage(matrix, sources, caps)
        try:
            plan = allocate_quotas(cov, weights, num, available, min_coverage=0.1)
        except UserError as e:
            assert "num_samples" in str(e) or "min_coverage" in str(e)
            continue
        assert sum(plan.quotas.values()) == num, seed
        assert all(0 <= plan.quotas[s] <= available[s] for s in sources), seed
        assert all(plan.quotas[s] == 0 for s in plan.excluded), seed
        perm = rng.permutation(n_src)
        shuffled = Coverage(matrix[perm], [sources[i] for i in perm], caps)
        assert allocate_quotas(shuffled, weights, num, available).quotas == plan.quotas, seed


def test_coverage_errors_name_the_culprit(world):
    sources, caps = world
    bad = dict(sources, odd=Profile(np.ones((3, D + 1)), np.ones(VOCAB)))
    with pytest.raises(UserError, match="'odd'"):
        coverage_matrix(bad, caps)
    with pytest.raises(UserError, match="'notok'.*token_counts"):
        coverage_matrix(dict(sources, notok=Profile(np.ones((3, D)))), caps)
    assert coverage_matrix(dict(sources, notok=Profile(np.ones((3, D)))), caps, alpha=1.0)
    with pytest.raises(UserError, match="'empty'"):
        coverage_matrix(dict(sources, empty=Profile(np.ones((0, D)), np.ones(VOCAB))), caps)
    with pytest.raises(UserError, match="'zeros'"):
        coverage_matrix(dict(sources, zeros=Profile(np.ones((3, D)), np.zeros(VOCAB))), caps)
    with pytest.raises(UserError, match="alpha"):
        coverage_matrix(sources, caps, alpha=1.5)


def test_quota_errors_name_the_culprit(coverage):
    avail = dict.fromkeys(coverage.sources, 100)
    with pytest.raises(UserError, match="'poetry'"):
        allocate_quotas(coverage, {**capability_weights(CAPS), "poetry": 1.0}, 10, avail)
    with pytest.raises(UserError, match="'math'"):
        allocate_quotas(coverage, {"code": 1.0, "prose": 1.0}, 10, avail)
    with pytest.raises(UserError, match="'junk'"):
        allocate_quotas(coverage, capability_weights(CAPS), 10,
                        {s: 100 for s in coverage.sources if s != "junk"})
    with pytest.raises(UserError, match="num_samples"):
        allocate_quotas(coverage, capability_weights(CAPS), 0, avail)
    with pytest.raises(UserError, match="min_coverage"):
        allocate_quotas(coverage, capability_weights(CAPS), 10, avail, min_coverage=1.0)


def test_table(coverage):
    weights = capability_weights(CAPS, "targeted", target="code")
    plan = allocate_quotas(coverage, weights, 64, dict.fromkeys(coverage.sources, 500))
    table = format_coverage_table(*coverage, weights, plan.quotas, plan.excluded)
    lines = table.splitlines()
    assert "code (w=1)" in lines[0] and "math (w=0.2)" in lines[0] and lines[0].endswith("quota")
    github = next(line for line in lines if line.startswith("github"))
    assert github.split()[-1] == str(plan.quotas["github"])
    assert lines[-1].startswith("excluded junk:")
