"""Resolution of repeats: the raw ledger as written (ids may repeat across shards, texts may
repeat across chunks) -> the pool's ledger, ids unique. A pure function of the rows, so the pool
is the same whatever order or number of workers wrote it (rules: cola_ray/pool/__init__.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

def row_keys(shards: pa.Array, ids: pa.Array) -> pa.Array:
    """One string per row naming where a stored row is: `<shard file>/<chunk id>` (a shard holds
    each id once as kept: repeats within a shard are dropped when it is written)."""
    return pc.binary_join_element_wise(shards, ids, "/")


def drop_rows(batch: pa.Table, keys: pa.Array) -> pa.Table:
    names = pc.replace_substring_regex(batch.column("path"), pattern=r"^.*/", replacement="")
    return batch.filter(pc.invert(pc.is_in(row_keys(names, batch.column("id")), value_set=keys))).drop_columns(["path"])


def resolve(raw: pa.Table) -> pa.Table:
    """The raw ledger (RAW_LEDGER_COLUMNS + shard, repeats included) -> the pool's ledger:
    LEDGER_COLUMNS with unique ids, plus `raw_id`, `raw_drop` and `shard` (where each row is
    stored), sorted by id. See the module docstring for the two rules; a pure function of the
    rows, so the same shards give the same pool whatever order they were written in."""
    t = raw.set_column(raw.schema.get_field_index("copy"), "copy", pc.fill_null(raw.column("copy"), 0))
    t = t.sort_by([("id", "ascending"), ("shard", "ascending"), ("copy", "ascending")])
    ids = np.asarray(t.column("id").to_pylist(), dtype=object)
    n = len(ids)
    first = np.ones(n, bool)
    if n > 1:
        first[1:] = ids[1:] != ids[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    rank = np.arange(n) - start
    new_ids, docs, drops = list(ids), t.column("doc_id").to_pylist(), t.column("drop").to_pylist()
    raw_drops = list(drops)
    for i in np.nonzero(rank)[0]:  # repeats of an id: only the rows of repeated documents
        r = int(rank[i])
        new_ids[i], drops[i] = f"{ids[i]}~{r}", "duplicate"
        docs[i] = " ".join(f"{d}~{r}" for d in docs[i].split(" "))
    keys = t.column("dedup_key")
    live = np.nonzero((np.asarray(drops, dtype=object) == "") & pc.is_valid(keys).to_numpy(zero_copy_only=False))[0]
    if len(live):  # exact duplicates by text: of the kept rows sharing a key, the smallest id survives
        sub = pa.table({"key": keys.take(live), "id": t.column("id").take(live)})  # rank 0: raw id = id
        winners = sub.group_by("key").aggregate([("id", "min")]).column("id_min")
        lost = pc.invert(pc.is_in(sub.column("id"), value_set=winners)).to_numpy(zero_copy_only=False)
        for i in live[lost]:
            drops[i] = "duplicate"
    out = pa.table({"id": pa.array(new_ids, pa.string()), "doc_id": pa.array(docs, pa.string()),
                    "source": t.column("source"), "num_tokens": t.column("num_tokens").cast(pa.int32()),
                    "drop": pa.array(drops, pa.string()), "raw_id": t.column("id"),
                    "raw_drop": pa.array(raw_drops, pa.string()), "shard": t.column("shard")})
    return out.sort_by("id")
