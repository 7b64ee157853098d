"""The pool contract: one schema with a version, kept rows only, projected reads, counts, and
shards of older (or newer) cola-ray versions read or refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cola_ray import pool as pool_mod
from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.pool import Pool, make_shard, write_shard

DIM = 4


def _chunks(ids, source="news", drops=None, keys=None):
    drops = drops or [""] * len(ids)
    return pa.table({"id": ids, "doc_id": [i.split("#")[0] for i in ids], "source": [source] * len(ids),
                     "num_tokens": pa.array([10] * len(ids), pa.int32()), "text": [f"text of {i}" for i in ids],
                     "dedup_key": keys or ids}), drops


def _write(folder, ids, source="news", drops=None, keys=None):
    chunks, drops = _chunks(ids, source, drops, keys)
    vectors = [None if d else np.full(DIM, n, np.float32) for n, d in enumerate(drops)]
    return write_shard(str(folder), make_shard(chunks, drops, vectors, DIM))


@pytest.fixture
def pool(tmp_path):
    _write(tmp_path, ["news:b#0", "news:a#0", "news:c#0"], drops=["", "", "too_short"])
    _write(tmp_path, ["code:x#0", "code:y#0"], source="code")
    return Pool.open(str(tmp_path))


def test_reads_kept_rows_sorted_by_id_with_only_the_columns_asked(pool):
    t = pool.read(["source", "vector"])
    assert t.column_names == ["id", "source", "vector"]
    assert t.column("id").to_pylist() == ["code:x#0", "code:y#0", "news:a#0", "news:b#0"]
    assert len(pool) == 4 and pool.source_counts() == {"code": 2, "news": 2}
    assert pool.read(["text"], ids=["news:a#0"]).to_pylist() == [{"id": "news:a#0", "text": "text of news:a#0"}]
    assert pool.only("code").read().column("id").to_pylist() == ["code:x#0", "code:y#0"]
    assert len(pool.only("news")) == 2 and "news:c#0" in pool.ids()  # the resume ledger holds dropped rows too


def test_counts_add_up(pool):
    c = pool.counts(["news:a#0"])
    assert c["embedded"] == 4 and c["dropped"] == {"too_short": 1} and c["selected"] == 1
    assert c["per_source"]["news"] == {"documents": 3, "chunks": 3, "embedded": 2, "tokens_embedded": 20, "selected": 1}


def test_shards_carry_the_schema_version(pool):
    meta = pq.read_schema(pool.shard_uris[0]).metadata[pool_mod.META_KEY]
    assert json.loads(meta) == {"version": pool_mod.SCHEMA_VERSION}


def test_a_shard_written_before_the_pool_existed_is_still_read(tmp_path):
    """Version 1: the same core columns, no metadata (what curate wrote before the redesign)."""
    old = pa.table({"id": ["news:a#0", "news:b#0"], "doc_id": ["news:a", "news:b"], "source": ["news", "news"],
                    "num_tokens": pa.array([5, 0], pa.int32()), "drop": ["", "empty"], "text": ["hello", ""],
                    "vector": pa.array([[1.0] * DIM, None], pa.list_(pa.float32(), DIM))})
    storage.write_parquet(str(tmp_path / "shard-old.parquet"), old)
    p = Pool.open(str(tmp_path))
    assert p.read(["text"]).to_pylist() == [{"id": "news:a#0", "text": "hello"}]


def test_newer_or_foreign_shards_are_refused_in_one_line(tmp_path):
    newer = make_shard(*_chunks(["a#0"]), [np.zeros(DIM, np.float32)], DIM)
    newer = newer.replace_schema_metadata({pool_mod.META_KEY: json.dumps({"version": 99}).encode()})
    storage.write_parquet(str(tmp_path / "new" / "shard-1.parquet"), newer)
    with pytest.raises(UserError, match=r"shard-1.parquet: written by a newer cola-ray \(pool schema v99"):
        Pool.open(str(tmp_path / "new")).read(["vector"])
    storage.write_parquet(str(tmp_path / "other" / "x.parquet"), pa.table({"id": ["a"], "text": ["t"]}))
    with pytest.raises(UserError, match="x.parquet: not a cola-ray activation shard"):
        Pool.open(str(tmp_path / "other")).read(["text"])


def test_repeats_resolve_to_unique_ids_whatever_order_the_shards_were_written_in(tmp_path):
    """Shards are written as chunks arrive: the pool itself resolves a chunk id stored twice (a
    repeated document) and two chunks with one text (dedup_key): first by (shard, copy) keeps
    the id, the smallest id keeps a key; the others are counted 'duplicate'."""
    from cola_ray.pool import resolve

    for order in ((0, 1, 2), (2, 1, 0)):
        folder = tmp_path / str(order[0])
        rows = [(["news:a#0", "news:b#0"], ["k1", "k2"]), (["news:a#0", "news:a#0"], ["k1", "k1"]),
                (["news:c#0"], ["k2"])]  # news:c#0 has news:b#0's text
        for i in order:
            _write(folder, rows[i][0], keys=rows[i][1])
        p = Pool.open(str(folder))
        led = p.ledger().to_pylist()
        assert [r["id"] for r in led] == ["news:a#0", "news:a#0~1", "news:a#0~2", "news:b#0", "news:c#0"]
        assert [r["drop"] for r in led] == ["", "duplicate", "duplicate", "", "duplicate"]
        assert led[1]["doc_id"] == "news:a~1" and len(p) == 2 and p.counts()["duplicates"] == 3
        got = p.read(["text", "vector"])
        assert got.column("id").to_pylist() == ["news:a#0", "news:b#0"]  # each once, payload included
        assert got.column("text").to_pylist() == ["text of news:a#0", "text of news:b#0"]
        assert p.ids() == {"news:a#0", "news:b#0", "news:c#0"}  # a resumed run skips every copy
    raw = Pool.open(str(tmp_path / "0")).raw_ledger()
    assert resolve(raw).equals(resolve(raw.take(list(range(raw.num_rows))[::-1])))  # row order is irrelevant


def test_ray_dataset_of_the_pool_leaves_out_resolved_repeats(tmp_path, ray_session):
    _write(tmp_path, ["news:a#0", "news:b#0"], keys=["k1", "k2"])
    _write(tmp_path, ["news:a#0", "news:c#0"], keys=["k1", "k2"])
    rows = Pool.open(str(tmp_path)).dataset(["text"]).take_all()
    assert sorted(r["id"] for r in rows) == ["news:a#0", "news:b#0"]


