"""Near-duplicates (one word changed) are dropped; distinct texts stay; order never matters;
the shuffle-by-bucket path gives the same answer as the in-memory one."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from cola_ray.errors import UserError
from cola_ray.stages.neardup import (
    band_rows, bucket_candidates, drop_from_pairs, drop_reasons, lsh_band_keys, lsh_params, minhash_signatures,
    shingles, verify_pairs,
)
from tests.conftest import news_texts
from tests.stages.neardup_reference import (NearDedup, estimated_jaccard, explode_buckets, near_duplicate_pairs,
                                            resolve_near_duplicates)

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def corpus() -> dict[int, str]:
    """20 distinct 200-word texts of real prose, plus edited copies: id 100+k copies text k
    with one word changed (k = 0..4), id 200 copies text 0 with another word changed."""
    words = " ".join(news_texts()).split()
    texts = {k: " ".join(words[k * 200:(k + 1) * 200]) for k in range(20)}
    for k in range(5):
        w = texts[k].split()
        w[100] = "zebra"
        texts[100 + k] = " ".join(w)
    w = texts[0].split()
    w[37] = "giraffe"
    texts[200] = " ".join(w)
    return texts


EXPECTED_DROPS = {100, 101, 102, 103, 104, 200}


def test_in_memory_dedup_drops_and_counts_near_duplicates(corpus):
    result = NearDedup(threshold=THRESHOLD).dedup(list(corpus.items()))
    assert result.dropped == EXPECTED_DROPS
    assert result.num_dropped == 6
    assert [i for i, _ in result.kept] == list(range(20))


def test_result_is_independent_of_input_order(corpus):
    items = list(corpus.items())
    for seed in range(3):
        random.Random(seed).shuffle(items)
        result = NearDedup(threshold=THRESHOLD).dedup(items)
        assert result.dropped == EXPECTED_DROPS
        assert [i for i, _ in result.kept] == [i for i, _ in items if i not in EXPECTED_DROPS]


def test_smallest_id_of_a_group_is_kept_whatever_the_ids(corpus):
    renamed = [(f"doc-{999 - i:04d}", t) for i, t in corpus.items()]
    dropped = NearDedup(threshold=THRESHOLD).duplicates(renamed)
    # text 0 and its two copies are one group: of doc-0999, doc-0899, doc-0799 the smallest stays
    assert {"doc-0999", "doc-0899"} <= dropped and "doc-0799" not in dropped


def test_distributed_path_matches_in_memory(corpus):
    """Signatures from two 'workers', rows grouped by LSH bucket, pairs per bucket, groups
    resolved once: the same drops as NearDedup."""
    items = list(corpus.items())
    random.Random(7).shuffle(items)
    half = len(items) // 2
    ids = np.array([i for i, _ in items])
    sigs = np.concatenate([minhash_signatures([t for _, t in part]) for part in
                           (items[:half], items[half:])])
    bands, rows = lsh_params(THRESHOLD, 128)
    exploded = explode_buckets(ids, sigs, bands, rows)
    buckets = defaultdict(list)
    for key, i, sig in zip(exploded["bucket"], exploded["id"], exploded["signature"]):
        buckets[key].append((i, sig))
    pairs = set()
    for members in buckets.values():
        if len(members) > 1:
            pairs.update(near_duplicate_pairs([m[0] for m in members],
                                              np.stack([m[1] for m in members]), THRESHOLD))
    assert drop_from_pairs(pairs) == EXPECTED_DROPS
    assert resolve_near_duplicates(ids, sigs, THRESHOLD) == EXPECTED_DROPS


def test_ray_shaped_steps_shuffle_ids_only_and_match_in_memory(corpus, tmp_path):
    """band_rows on two 'workers' (signatures to files, (bucket, id) rows out), candidates per
    bucket, verification from the files read back: the same drops as NearDedup, and an exact
    copy (same key) is reported as 'duplicate'."""
    import pyarrow as pa

    from cola_ray import storage

    items = [(f"d{i:03d}", t) for i, t in corpus.items()] + [("d999", corpus[3])]
    keys = {i: f"k{i}" for i, _ in items} | {"d999": "kd003"}
    random.Random(3).shuffle(items)
    folder = str(tmp_path / "sigs")
    rows = [band_rows(pa.table({"doc_id": [i for i, _ in part], "text": [t for _, t in part],
                                "key": [keys[i] for i, _ in part]}), THRESHOLD, folder)
            for part in (items[:10], items[10:])]
    shuffled = pa.concat_tables(rows)
    assert shuffled.column_names == ["bucket", "id", "documents"]  # no signature crosses the shuffle
    assert sum(shuffled.column("documents").to_pylist()) == len(items)  # each batch counts its documents
    groups = defaultdict(list)
    for bucket, i in zip(shuffled.column("bucket").to_pylist(), shuffled.column("id").to_pylist()):
        groups[bucket].append(i)
    pairs = set()
    for members in groups.values():
        cand = bucket_candidates(pa.table({"bucket": [0] * len(members), "id": members}))
        pairs.update(zip(cand.column("a").to_pylist(), cand.column("b").to_pylist()))
    sigs = storage.read_parquet(storage.list_files(folder, ".parquet"))
    verdicts = drop_reasons(verify_pairs(pairs, sigs, THRESHOLD))
    assert verdicts == {**{f"d{i:03d}": "near_duplicate" for i in EXPECTED_DROPS}, "d999": "duplicate"}


def test_signatures_are_deterministic_uint64_and_estimate_jaccard(corpus):
    sigs = minhash_signatures([corpus[0], corpus[100], corpus[1]], num_perm=256, ngram=5)
    assert sigs.shape == (3, 256) and sigs.dtype == np.uint64
    assert np.array_equal(sigs, minhash_signatures([corpus[0], corpus[100], corpus[1]], 256, 5))
    assert not np.array_equal(sigs, minhash_signatures([corpus[0], corpus[100], corpus[1]], 256, 5,
                                                       seed=2))
    a, b = shingles(corpus[0], 5), shingles(corpus[100], 5)
    true_j = len(a & b) / len(a | b)
    assert abs(estimated_jaccard(sigs[0], sigs[1]) - true_j) < 0.08
    assert estimated_jaccard(sigs[0], sigs[2]) < 0.1
    assert minhash_signatures([], 64).shape == (0, 64)


def test_shingles_ignore_case_and_punctuation():
    assert shingles("The cat, sat!", 2) == shingles("the CAT sat", 2) == {b"the cat", b"cat sat"}
    assert shingles("short", 5) == {b"short"}
    assert shingles("  ", 5) == set()


def test_band_keys_shape_and_equality():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**63, size=(4, 20), dtype=np.uint64)
    sigs[1] = sigs[0]
    sigs[2, :5] = sigs[0, :5]  # shares only the first band with row 0
    keys = lsh_band_keys(sigs, bands=4, rows=5)
    assert keys.shape == (4, 4) and keys.dtype == np.uint64
    assert np.array_equal(keys[0], keys[1])
    assert keys[2, 0] == keys[0, 0] and not np.any(keys[2, 1:] == keys[0, 1:])
    same_values = np.zeros((1, 20), dtype=np.uint64)
    assert len(set(lsh_band_keys(same_values, 4, 5)[0].tolist())) == 4  # band index is in the key
    with pytest.raises(UserError, match="5 x 5"):
        lsh_band_keys(sigs, bands=5, rows=5)


def test_groups_resolve_transitively_keeping_the_smallest_id():
    assert drop_from_pairs([(2, 3), (1, 3)]) == {2, 3}
    assert drop_from_pairs([("b", "c"), ("x", "y")]) == {"c", "y"}
    assert drop_from_pairs([]) == set()


def test_bad_input_is_user_error(corpus):
    with pytest.raises(UserError, match="threshold"):
        NearDedup(threshold=0.0)
    with pytest.raises(UserError, match="'a'"):
        NearDedup().duplicates([("a", corpus[0]), ("a", corpus[1])])
    with pytest.raises(UserError, match="2 ids"):
        near_duplicate_pairs([1, 2], np.zeros((3, 8), dtype=np.uint64), 0.5)


def test_verdicts_answer_like_the_dict_they_were_built_from():
    from cola_ray.stages.neardup import Verdicts

    drops = {f"news:{i:04d}": ("duplicate" if i % 3 else "near_duplicate") for i in range(0, 500, 7)}
    v = Verdicts(drops)
    assert len(v) == len(drops) and v.hashes.dtype == np.uint64 and v.hashes.nbytes == 8 * len(drops)
    for i in range(500):
        assert v.get(f"news:{i:04d}", "") == drops.get(f"news:{i:04d}", "")
    assert Verdicts({}).get("x", "") == ""
