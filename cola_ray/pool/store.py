"""The shard files of one pool and the columns read from them so far (shared by a Pool and its
per-source views): schema checks, projected scans, metadata layouts."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.pool.resolution import resolve, row_keys
from cola_ray.pool.shards import (CORE_COLUMNS, IDENTITY_COLUMNS, META_KEY, OPTIONAL_COLUMNS, RAW_LEDGER_COLUMNS,
                                  shard_name, shard_version)


class ShardStore:
    """What a Pool and its per-source views share: the shard files and the columns read so far."""

    def __init__(self, uris: tuple[str, ...], raw: pa.Table | None):
        self.uris = uris
        self.raw = raw  # RAW_LEDGER_COLUMNS + shard, as written (None: read from the shards)
        self.ledger: pa.Table | None = None  # resolved: LEDGER_COLUMNS + raw_id, shard, sorted by id
        self.kept: pa.Table | None = None  # id + cached columns of the kept rows, sorted by id
        self.kept_keys: pa.Array | None = None  # shard/id of every kept row, for filtering reads
        self.schema: pa.Schema | None = None
        self.layouts: dict[str, dict | None] = {}

    def raw_rows(self) -> pa.Table:
        if self.raw is None:
            self.raw = self.read(list(RAW_LEDGER_COLUMNS))
        return self.raw

    def resolved(self) -> pa.Table:
        if self.ledger is None:
            self.ledger = resolve(self.raw_rows())
            kept = self.ledger.filter(pc.equal(self.ledger.column("drop"), ""))
            self.kept_keys = row_keys(kept.column("shard"), kept.column("raw_id"))
        return self.ledger

    def only_kept(self, table: pa.Table) -> pa.Table:
        """Rows of a read (with `shard`) that the resolution keeps, sorted by id, without `shard`."""
        self.resolved()
        mask = pc.is_in(row_keys(table.column("shard"), table.column("id")), value_set=self.kept_keys)
        return table.filter(mask).drop_columns(["shard"]).sort_by("id")

    def dataset_schema(self) -> pa.Schema:
        """The first shard's schema (checked) widened by every optional column, so that
        shards without an optional column read as nulls instead of failing."""
        if self.schema is None:
            import pyarrow.parquet as pq

            fs, path = storage.filesystem(self.uris[0])
            first = storage.with_retries(f"read the schema of {self.uris[0]}", lambda: pq.read_schema(path, filesystem=fs))
            shard_version(first, self.uris[0])
            fields = [first.field(c) for c in CORE_COLUMNS]
            fields += [pa.field(n, t) for n, t in {**IDENTITY_COLUMNS, **OPTIONAL_COLUMNS}.items()]
            self.schema = pa.schema(fields)
        return self.schema

    def layout(self, key: str) -> dict | None:
        """The `key` layout ("stats", "experts") of the first shard that records one (None: no
        shard does)."""
        import pyarrow.parquet as pq

        if key in self.layouts:
            return self.layouts[key]
        found = None
        for uri in self.uris:
            fs, path = storage.filesystem(uri)
            meta = storage.with_retries(f"read the schema of {uri}", lambda: pq.read_schema(path, filesystem=fs)).metadata
            raw = (meta or {}).get(META_KEY)
            found = json.loads(raw).get(key) if raw else None
            if found:
                break
        self.layouts[key] = found
        return found

    def read(self, columns: list[str], filter=None) -> pa.Table:
        """`columns` of the rows matching `filter`, as stored (repeats included), plus `shard`
        (the file each row is in: what resolution tells repeats apart by)."""
        if not self.uris:
            return pa.table({c: pa.array([], self._type(c)) for c in [*columns, "shard"]})
        import pyarrow.dataset as pads

        schema = self.dataset_schema()
        unknown = [c for c in columns if c not in schema.names]
        if unknown:
            raise UserError(f"pool {self.folder()}: no column {unknown[0]!r} (columns: {', '.join(schema.names)})")
        fs, _ = storage.filesystem(self.uris[0])
        paths = [storage.filesystem(u)[1] for u in self.uris]
        def scan() -> pa.Table:
            from concurrent.futures import ThreadPoolExecutor

            def one(fragment) -> pa.Table:
                part = fragment.to_table(schema=schema, columns=columns, filter=filter)
                return part.append_column("shard", pa.array([shard_name(fragment.path)] * part.num_rows, pa.string()))

            fragments = list(pads.dataset(paths, schema=schema, format="parquet", filesystem=fs).get_fragments())
            with ThreadPoolExecutor(max_workers=8) as pool:
                return pa.concat_tables(list(pool.map(one, fragments)))

        return storage.with_retries(f"read {len(paths)} activation shard(s) under {self.folder()}", scan)

    def _type(self, column: str) -> pa.DataType:
        types = {"num_tokens": pa.int32(), "vector": pa.list_(pa.float32()), **IDENTITY_COLUMNS, **OPTIONAL_COLUMNS}
        return types.get(column, pa.string())

    def folder(self) -> str:
        return self.uris[0].rsplit("/", 1)[0] if self.uris else "(empty)"
