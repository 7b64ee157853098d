"""The compressor-aware selectors' maths on hand-checkable cases, and on the shared pool."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.pool import Pool, shard_schema
from cola_ray.selectors import SelectorContext, get_selector
from cola_ray.selectors.compressor_aware import greedy_cover, herd, herding_features, read_stats
from cola_ray.stages.layerstats import SLOT_STRIDE
from tests.selectors.conftest import pool_rows, write_pool


def test_set_cover_picks_the_chunk_covering_the_most_uncovered_weight_first():
    chunks = [np.array(c) for c in ([1], [1, 2], [2, 3, 4], [4], [])]
    demands = {1: (1, 1.0), 2: (1, 1.0), 3: (1, 5.0), 4: (2, 1.0)}
    order = np.arange(len(chunks))
    chosen, gains = greedy_cover(chunks, demands, 4, order)
    # chunk 2 covers 2 + 3 + 4 (weight 7); then chunk 0 and 1 tie on channel 1 (weight 1, and 4's second
    # unit ties with them): the lower order wins; once every demand is met, the rest fills by order.
    assert chosen[0] == 2 and gains[0] == 7.0
    assert chosen[:3] == [2, 0, 3] and gains[:3] == [7.0, 1.0, 1.0]
    assert gains == sorted(gains, reverse=True) and len(set(chosen)) == 4


def test_set_cover_meets_each_channel_as_often_as_demanded():
    chunks = [np.array([7])] * 5 + [np.array([9])] * 5
    chosen, gains = greedy_cover(chunks, {7: (3, 1.0), 9: (1, 1.0)}, 4, np.arange(10))
    assert sorted(chosen) == [0, 1, 2, 5] and gains == [1.0] * 4


def test_herding_first_pick_is_exact_and_all_of_the_pool_matches_its_mean():
    phi = np.array([[0.0], [1.0], [2.0], [4.0]], np.float32)
    tokens = np.ones(4)
    mu = phi.mean(0).astype(np.float64)  # 1.75
    chosen, errors = herd(phi, tokens, mu, 4)
    assert chosen[0] == 2 and errors[0] == pytest.approx(0.0625)  # |2 - 1.75|^2, the best single chunk
    assert errors[-1] == pytest.approx(0.0, abs=1e-12)  # the whole pool is its own mean
    # herding is not monotone at every pick (a second chunk must move the mean off 2): the
    # greedy step is optimal given the picks so far, which this checks by brute force
    for t in range(1, 4):
        s, w = phi[chosen[:t]].sum(0), t
        best = min(float(((s + phi[j]) / (w + 1) - mu) @ ((s + phi[j]) / (w + 1) - mu))
                   for j in range(4) if j not in chosen[:t])
        assert errors[t] == pytest.approx(best)


def test_herding_weights_chunks_by_their_tokens():
    phi = np.array([[0.0], [10.0], [3.0]], np.float32)
    chosen, errors = herd(phi, np.array([9.0, 1.0, 1.0]), np.array([1.0]), 2)
    # 0 first (|0-1|^2=1 beats |3-1|^2=4); then 10 with 1 token moves the 9-token mean to 1.0 exactly
    assert chosen == [0, 1] and errors[1] == pytest.approx(0.0)


def test_moment_match_beats_random_on_the_statistics_it_matches(pool):
    stats = read_stats(pool, "moment-match")
    phi, mu = herding_features(stats, None, "both")

    def error(ids):
        rows = [stats.ids.index(i) for i in ids]
        w = stats.tokens[rows] / stats.tokens[rows].sum()
        d = w @ phi[rows].astype(np.float64) - mu
        return float(d @ d)

    ctx = SelectorContext(model="unused")
    herded = error(get_selector("moment-match").select(pool, 8, ctx).table.column("id").to_pylist())
    randoms = [error(get_selector("random").select(pool, 8, SelectorContext(model="unused", seed=s)).table
                     .column("id").to_pylist()) for s in range(10)]
    assert herded < min(randoms)


def test_outlier_coverage_reaches_the_outlier_channels_random_misses(pool):
    """The pool flags channel 3 of slot 0 in every code chunk (a third of the pool) and channel 7 of
    slot 1 in a third of the news chunks: with k = 6, both get about their share."""
    sel = get_selector("outlier-coverage").select(pool, 6, SelectorContext(model="unused"))
    flagged = {r["id"]: set(r["stat_outliers"]) for r in pool.read(["stat_outliers"]).to_pylist()}
    chosen = sel.table.column("id").to_pylist()
    assert sum(3 in flagged[i] for i in chosen) == 2 and sum(SLOT_STRIDE + 7 in flagged[i] for i in chosen) == 1
    assert sel.details["channels"] == 2 and sel.details["covering_picks"] == 3


def test_a_pool_without_statistics_or_probes_is_one_line(pool, tmp_path):
    rows = [{k: v for k, v in r.items() if not k.startswith("stat_")} for r in pool_rows()]
    uri = storage.join(str(tmp_path), "shard-000.parquet")
    storage.write_parquet(uri, pa.Table.from_pylist(rows, schema=shard_schema(8)))
    bare = Pool((uri,))
    for name in ("moment-match", "outlier-coverage"):
        with pytest.raises(UserError, match=f"--selector {name}: pool .* has no per-chunk layer statistics"):
            get_selector(name).select(bare, 4, SelectorContext(model="unused"))
    with pytest.raises(UserError, match="target=probes: selector moment-match needs the run's probes"):
        get_selector("moment-match").select(pool, 4, SelectorContext(model="unused", params={"target": "probes"}))


def test_probes_as_the_target_steer_the_selection_towards_them(pool, tmp_path):
    """Probes that are all code-like (channel 3 of slot 0 an outlier in every one): targeting them,
    each statistics selector picks mostly code, where targeting the pool follows its news/code mix."""
    code_like = [dict(r, id=f"probe-{n}#0", doc_id=f"probe-{n}", source="code") for n, r in enumerate(pool_rows())
                 if r["source"] == "code" and r["drop"] == ""][:10]
    probes = write_pool(tmp_path / "probes", code_like, shard_rows=10)
    source = {r["id"]: r["source"] for r in pool.read(["source"]).to_pylist()}
    for name in ("moment-match", "outlier-coverage", "cluster-herding"):
        picks = {}
        for target in ("pool", "probes"):
            ctx = SelectorContext(model="unused", params={"target": target}, probe_pool=probes.folder)
            ids = get_selector(name).select(pool, 9, ctx).table.column("id").to_pylist()
            picks[target] = sum(source[i] == "code" for i in ids)
        assert picks["probes"] > picks["pool"] and picks["probes"] >= 6, (name, picks)


def test_capabilities_target_weighs_every_capability_the_same(pool, tmp_path):
    """Probes of 10 code chunks and 2 news chunks: `target: probes` is mostly code, `capabilities`
    gives news half the weight, so herding takes more news chunks, and the herded mean is the
    average of the two capabilities' means."""
    from cola_ray.selectors.compressor_aware import balanced

    rows = [r for r in pool_rows() if r["drop"] == ""]
    probe_rows = ([dict(r, id=f"probe-c{n}#0", doc_id=f"probe-c{n}", source="code")
                   for n, r in enumerate([r for r in rows if r["source"] == "code"][:10])]
                  + [dict(r, id=f"probe-n{n}#0", doc_id=f"probe-n{n}", source="general")
                     for n, r in enumerate([r for r in rows if r["source"] == "news"][:2])])
    probes = write_pool(tmp_path / "probes", probe_rows, shard_rows=12)
    stats = read_stats(probes, "moment-match")
    even = balanced(stats, probes.read(["source"]).column("source").to_pylist())
    _, mu = herding_features(read_stats(pool, "moment-match"), even, "moments")
    caps = np.array(probes.read(["source"]).column("source").to_pylist())
    means = [np.average(stats.moments[caps == c], axis=0, weights=stats.tokens[caps == c]) for c in ("code", "general")]
    _, mu_code = herding_features(read_stats(pool, "moment-match"), stats, "moments")
    assert not np.allclose(mu, mu_code)
    assert even.share.sum() == pytest.approx(1.0) and even.share[caps == "general"].sum() == pytest.approx(0.5)
    source = {r["id"]: r["source"] for r in pool.read(["source"]).to_pylist()}
    news = {}
    for target in ("probes", "capabilities"):
        ctx = SelectorContext(model="unused", params={"target": target}, probe_pool=probes.folder)
        ids = get_selector("moment-match").select(pool, 12, ctx).table.column("id").to_pylist()
        news[target] = sum(source[i] == "news" for i in ids)
    assert news["capabilities"] > news["probes"], news
    # the herded target: per slot block, the direction of the plain average of the two means
    expected = 0.5 * means[0] + 0.5 * means[1]
    for block_mu, block_e in zip(np.split(mu, 2), np.split(expected, 2)):
        assert np.allclose(block_mu / np.linalg.norm(block_mu), block_e / np.linalg.norm(block_e), atol=1e-5)
