"""A candidate pool written the way curate's activation actors write it: shards of chunks
(id, doc_id, source, num_tokens, drop, text, vector), with real text and seeded vectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cola_ray import storage
from cola_ray.selectors import Pool
from tests.conftest import code_texts, news_texts

DIM = 8


def pool_rows() -> list[dict]:
    """60 news chunks, 30 code chunks, 5 dropped rows (never candidates)."""
    rng = np.random.default_rng(0)
    rows = []
    for source, texts in (("news", news_texts()[:60]), ("code", [t[:800] for t in code_texts(30)])):
        for i, text in enumerate(texts):
            rows.append(dict(id=f"{source}-{i:03d}#0", doc_id=f"{source}-{i:03d}", source=source,
                             num_tokens=len(text.split()), drop="", text=text,
                             vector=rng.standard_normal(DIM).astype(np.float32).tolist()))
    for i in range(5):
        rows.append(dict(id=f"news-dup-{i}#0", doc_id=f"news-dup-{i}", source="news", num_tokens=10,
                         drop="duplicate", text="", vector=None))
    return rows


def write_pool(folder, rows: list[dict], shard_rows: int) -> Pool:
    schema = pa.schema([("id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()),
                        ("num_tokens", pa.int32()), ("drop", pa.string()), ("text", pa.string()),
                        ("vector", pa.list_(pa.float32(), DIM))])
    uris = []
    for n, lo in enumerate(range(0, len(rows), shard_rows)):
        uri = storage.join(str(folder), f"shard-{n:03d}.parquet")
        storage.write_parquet(uri, pa.Table.from_pylist(rows[lo: lo + shard_rows], schema=schema))
        uris.append(uri)
    return Pool(tuple(uris))


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Pool:
    return write_pool(tmp_path_factory.mktemp("pool"), pool_rows(), shard_rows=32)


@pytest.fixture(scope="module")
def shuffled_pool(tmp_path_factory) -> Pool:
    """The same candidates in another order and other shard boundaries."""
    rows = pool_rows()
    order = np.random.default_rng(1).permutation(len(rows))
    return write_pool(tmp_path_factory.mktemp("pool-shuffled"), [rows[i] for i in order], shard_rows=17)
