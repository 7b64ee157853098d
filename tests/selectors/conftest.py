"""A candidate pool written the way curate's activation actors write it: shards of chunks
(id, doc_id, source, num_tokens, drop, text, vector, and the layer statistics), with real text
and seeded vectors and statistics (2 slots of width 16: code chunks flag channel 3 of slot 0
as an outlier, a third of the news chunks channel 7 of slot 1)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cola_ray import storage
from cola_ray.pool import STAT_COLUMNS, shard_schema
from cola_ray.selectors import Pool
from cola_ray.stages.layerstats import SLOT_STRIDE
from tests.conftest import code_texts, news_texts

DIM = 8
SLOTS, WIDTH = 2, 16
LAYOUT = {"slots": [{"layer": 0, "input_of": ["q_proj"], "width": WIDTH}, {"layer": 0, "input_of": ["up_proj"],
                                                                          "width": WIDTH}],
          "moment_buckets": 128, "sketch_rank": 8, "outlier_tau": 6.0, "max_outliers": 16, "sketch_seed": 0}


def synthetic_stats(rng, source: str, i: int) -> dict:
    """Moments (slot x channel mean squares), a sketch (slot x 36), outliers as curate writes them."""
    moments = rng.gamma(2.0, 0.5, (SLOTS, WIDTH))
    outliers = []
    if source == "code":
        moments[0, 3] *= 60
        outliers.append(3)
    if source == "news" and i % 3 == 0:
        moments[1, 7] *= 60
        outliers.append(SLOT_STRIDE + 7)
    sketch = rng.standard_normal((SLOTS, 36)) * 0.1 + moments.mean(1, keepdims=True)
    return {"stat_moments": moments.reshape(-1).astype(np.float32).tolist(),
            "stat_sketch": sketch.reshape(-1).astype(np.float32).tolist(), "stat_outliers": outliers}


def pool_rows() -> list[dict]:
    """60 news chunks, 30 code chunks, 5 dropped rows (never candidates)."""
    rng = np.random.default_rng(0)
    rows = []
    for source, texts in (("news", news_texts()[:60]), ("code", [t[:800] for t in code_texts(30)])):
        for i, text in enumerate(texts):
            rows.append(dict(id=f"{source}-{i:03d}#0", doc_id=f"{source}-{i:03d}", source=source,
                             num_tokens=len(text.split()), drop="", text=text,
                             vector=rng.standard_normal(DIM).astype(np.float32).tolist(),
                             **synthetic_stats(rng, source, i)))
    for i in range(5):
        rows.append(dict(id=f"news-dup-{i}#0", doc_id=f"news-dup-{i}", source="news", num_tokens=10,
                         drop="duplicate", text="", vector=None, **dict.fromkeys(STAT_COLUMNS)))
    return rows


def write_pool(folder, rows: list[dict], shard_rows: int) -> Pool:
    schema = shard_schema(DIM, STAT_COLUMNS, LAYOUT)
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
