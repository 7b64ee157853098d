"""The activation shard: its one schema, its version, and how a shard is written.

What each column holds is the package docstring's (cola_ray/pool/__init__.py) business; this module
is the code: the columns and their Arrow types, the optional per-chunk columns later passes add
(`OPTIONAL_COLUMNS`), the version in each shard's Parquet metadata (`SCHEMA_VERSION`, checked by
`shard_version`), and the writer the activation actors call (`make_shard` + `write_shard`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.errors import UserError

SCHEMA_VERSION = 4  # 3: optional per-chunk layer-input statistics + their layout; 4: dedup_key, copy
META_KEY = b"cola_ray.pool"
LEDGER_COLUMNS = ("id", "doc_id", "source", "num_tokens", "drop")
CORE_COLUMNS = (*LEDGER_COLUMNS, "text", "vector")
KEPT = pc.field("drop") == ""
# Written by v4 shards for the pool's resolution of repeats (read as nulls from older shards,
# which were deduplicated before they were written).
IDENTITY_COLUMNS: dict[str, pa.DataType] = {"dedup_key": pa.string(), "copy": pa.int32()}
# The raw ledger: what the actors return and what resolution starts from (+ `shard`: file name).
RAW_LEDGER_COLUMNS = (*LEDGER_COLUMNS, *IDENTITY_COLUMNS)
# Optional per-chunk columns (name -> Arrow type) a shard may carry beyond the core ones; a
# reader asking for one that a shard lacks gets nulls for that shard's rows.
# stages/layerstats.py says what they hold; the shard metadata's "stats" entry gives their layout.
OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "stat_moments": pa.list_(pa.float32()), "stat_sketch": pa.list_(pa.float32()), "stat_outliers": pa.list_(pa.int32()),
    "messages": pa.string(),  # the conversation turns (JSON) a chat-rendered chunk came from (stages/chat.py)
    # MoE models: tokens routed to each expert of each MoE layer (stages/experts.py; layout: "experts")
    "expert_tokens": pa.list_(pa.int32()),
}
STAT_COLUMNS = ("stat_moments", "stat_sketch", "stat_outliers")



def shard_schema(proj_dim: int, optional: Sequence[str] = (), stats_layout: dict | None = None,
                 experts_layout: dict | None = None) -> pa.Schema:
    fields = [pa.field("id", pa.string()), pa.field("doc_id", pa.string()), pa.field("source", pa.string()),
              pa.field("num_tokens", pa.int32()), pa.field("drop", pa.string()), pa.field("text", pa.string()),
              pa.field("vector", pa.list_(pa.float32(), proj_dim))]
    fields += [pa.field(name, t) for name, t in IDENTITY_COLUMNS.items()]
    fields += [pa.field(name, OPTIONAL_COLUMNS[name]) for name in optional]
    meta = {"version": SCHEMA_VERSION, **({"stats": stats_layout} if stats_layout else {}),
            **({"experts": experts_layout} if experts_layout else {})}
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})


def make_shard(chunks: pa.Table, drops: list[str], vectors: list, proj_dim: int,
               optional: dict[str, list] | None = None, stats_layout: dict | None = None,
               experts_layout: dict | None = None) -> pa.Table:
    """One shard from chunk rows (`id`, `doc_id`, `source`, `num_tokens`, `text`, `dedup_key`
    (optional)), their final drop reasons and vectors (np arrays, None for dropped rows), optional
    columns (name -> one value per row, None for dropped rows) and their layout; sorted by id,
    with `copy` numbering repeats of an id within the shard (see `copies`)."""
    optional = {name: pa.array([None if v is None else np.asarray(v) for v in values], OPTIONAL_COLUMNS[name])
                for name, values in (optional or {}).items()}
    texts = chunks.column("text").to_pylist()
    if "messages" in chunks.column_names and chunks.column("messages").null_count < chunks.num_rows:
        optional["messages"] = pa.array([m if not d else None for m, d in zip(chunks.column("messages").to_pylist(), drops)],
                                        pa.string())
    ids = chunks.column("id").to_pylist()
    keys = chunks.column("dedup_key") if "dedup_key" in chunks.column_names else pa.nulls(len(ids), pa.string())
    table = pa.table({
        "id": chunks.column("id"), "doc_id": chunks.column("doc_id"), "source": chunks.column("source"),
        "num_tokens": chunks.column("num_tokens").cast(pa.int32()), "drop": pa.array(drops, pa.string()),
        "text": pa.array([t if not d else "" for t, d in zip(texts, drops)], pa.string()),
        "vector": pa.array([None if v is None else np.asarray(v, np.float32) for v in vectors],
                           pa.list_(pa.float32(), proj_dim)),
        "dedup_key": keys, "copy": pa.array(copies(ids), pa.int32()),
        **optional,
    }, schema=shard_schema(proj_dim, list(optional), stats_layout, experts_layout))
    return table.sort_by([("id", "ascending"), ("copy", "ascending")])


def copies(ids: Sequence[str]) -> list[int]:
    """Per row, how many earlier rows of the list have the same id (0 for a first occurrence)."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        out.append(seen.get(i, 0))
        seen[i] = out[-1] + 1
    return out


def shard_name(uri: str) -> str:
    """A shard's identity inside its pool: the file name (derived from its rows)."""
    return uri.rsplit("/", 1)[-1]


def write_shard(shard_dir: str, shard: pa.Table) -> str:
    """Write a shard under a name derived from its rows: a retried batch rewrites the same file."""
    name = hashlib.sha1("\n".join(shard.column("id").to_pylist()).encode()).hexdigest()[:20]
    uri = storage.join(shard_dir, f"shard-{name}.parquet")
    storage.write_parquet(uri, shard)
    return uri


def set_aside_unreadable(shard_dir: str, to: str) -> list[str]:
    """Move the shards under `shard_dir` whose parquet footer cannot be read (a file cut short
    by a full disk or a copy interrupted, emptied, overwritten) to `to`, and return their
    names: a resumed run then re-embeds their chunks instead of failing on them, and the bytes
    stay there for a look. A missing shard needs nothing: its chunks are simply not done."""
    import pyarrow.parquet as pq

    moved = []
    for uri in storage.list_files(shard_dir, ".parquet"):
        fs, path = storage.filesystem(uri)
        try:
            pq.read_metadata(fs.open_input_file(path))
        except (OSError, pa.ArrowException):
            storage.move(uri, storage.join(to, shard_name(uri)))
            moved.append(shard_name(uri))
    return moved


def shard_version(schema: pa.Schema, uri: str) -> int:
    """The pool schema version of a shard, or a one-line refusal naming it."""
    missing = [c for c in CORE_COLUMNS if c not in schema.names]
    if missing:
        raise UserError(f"{uri}: not a cola-ray activation shard (no column {missing[0]!r}); "
                        f"delete {uri.rsplit('/', 1)[0]} and rerun")
    raw = (schema.metadata or {}).get(META_KEY)
    version = 1 if raw is None else int(json.loads(raw).get("version", 1))
    if version > SCHEMA_VERSION:
        raise UserError(f"{uri}: written by a newer cola-ray (pool schema v{version}; this one reads up to "
                        f"v{SCHEMA_VERSION}): upgrade cola-ray or embed into a new --out")
    return version
