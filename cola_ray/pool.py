"""The pool: the one owner of the activation-shard contract.

Everything after the activation pass (selectors, stage-1 coverage, plots, the sweep, scoring)
reads the candidate pool through this module and nothing else. It owns:

- the **shard schema** (`shard_schema`): one row per chunk that reached the activation pass,
  kept or dropped (dropped rows keep no payload, so the counts survive in the ledger):

    id          chunk id (`<doc_id>#<index>`), unique in the pool
    doc_id      document id (`<source>:<content hash>`; a packed sequence: its documents, space-separated)
    source      the corpus label
    num_tokens  int32, the chunk's tokens (0: a document dropped whole)
    drop        '' = kept (embedded), else the reason it was dropped
    text        the chunk's text ('' when dropped)
    vector      fixed-size list<float32>[proj_dim], null when dropped
    dedup_key   (v4) the chunk's exact-duplicate key (hash of its normalised text)
    copy        (v4) 0, or n for the n-th repeat of the same id within the shard

  A shard is written as the chunks arrive (no shuffle in front of the activation actors), so
  the shards may hold one chunk id more than once (a document repeated in the corpus: its id
  is its content hash) and two chunks with the same text (a paragraph shared by documents).
  The pool **resolves** both from the small ledger (`resolve`), deterministically whatever the
  arrival order or the number of workers: of rows with one id, the first by (shard name,
  copy) keeps it and every later one becomes `<id>~<n>` of document `<doc_id>~<n>`, dropped
  as 'duplicate'; of kept rows with one dedup_key, the smallest id survives and the others
  are 'duplicate'. Everything below serves the resolved view: ids are unique.

  plus **optional columns** (`OPTIONAL_COLUMNS`: per-chunk statistics that later passes add;
  `expert_tokens` of MoE models, laid out as the metadata's "experts" entry says).
  Every shard carries `{"version": SCHEMA_VERSION}` under the `cola_ray.pool` key of its
  Parquet metadata. Version 1 is a shard written before this module existed: same core columns,
  no metadata, still read. A newer version, or a file without the core columns, is refused with
  one line naming the file and what to do.
- the **kept-rows filter** (`KEPT`, then the resolution above): nobody else spells `drop == ""`;
- **projected reads** (`Pool.read`): only the columns asked for, kept rows only, sorted by id
  (the pool's only order, so results never depend on sharding or arrival order); every column
  but `text` is read from storage once per Pool and then served from memory (text can be the
  bulk of a pool, so it is read on demand, optionally for a few ids only);
- the **ledger** (`Pool.ledger`: the small per-row columns of kept and dropped rows), the
  per-source counts of the manifest (`Pool.counts`) and the resume ledger (`Pool.ids`: every
  chunk already embedded). A curate run hands the ledger rows its actors return straight to the
  Pool (`Pool(uris, ledger=...)`) instead of reading them back from storage.
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


class _Store:
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
            self.kept_keys = _row_keys(kept.column("shard"), kept.column("raw_id"))
        return self.ledger

    def only_kept(self, table: pa.Table) -> pa.Table:
        """Rows of a read (with `shard`) that the resolution keeps, sorted by id, without `shard`."""
        self.resolved()
        mask = pc.is_in(_row_keys(table.column("shard"), table.column("id")), value_set=self.kept_keys)
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


class Pool:
    """The embedded candidate chunks of one curate run (its activation shards), or the view of
    one source of them (`only`)."""

    def __init__(self, shard_uris: Sequence[str], ledger: pa.Table | None = None, *, _store: _Store | None = None,
                 _source: str | None = None):
        """`ledger`: the raw ledger rows of these shards when the caller has them (what the
        activation actors returned: RAW_LEDGER_COLUMNS + shard), so they are not read back."""
        self._store = _store or _Store(tuple(sorted(shard_uris)), ledger)
        self.source = _source

    @classmethod
    def open(cls, shard_dir: str) -> "Pool":
        return cls(storage.list_files(shard_dir, ".parquet"))

    @property
    def shard_uris(self) -> tuple[str, ...]:
        return self._store.uris

    @property
    def folder(self) -> str:
        return self._store.folder()

    def stats_layout(self) -> dict | None:
        """What the per-chunk statistics columns hold (stages/layerstats.py), or None when the
        pool was embedded without them (an older cola-ray, or --stat-layers 0)."""
        return self._store.layout("stats")

    def experts_layout(self) -> dict | None:
        """Where `expert_tokens` counts lie (stages/experts.py: MoE layer indices, experts per
        layer, top-k), or None: a dense model (or a pool embedded before expert counting)."""
        return self._store.layout("experts")

    def only(self, source: str) -> "Pool":
        """The view of one source: reads, counts and selections see only its chunks."""
        return Pool((), _store=self._store, _source=source)

    # -- the ledger: kept and dropped rows, small columns ----------------------------------

    def ledger(self) -> pa.Table:
        """LEDGER_COLUMNS of every row (kept and dropped), resolved (ids unique), sorted by id."""
        return self._view(self._store.resolved()).select(list(LEDGER_COLUMNS))

    def raw_ledger(self) -> pa.Table:
        """The ledger rows as written (RAW_LEDGER_COLUMNS + shard): what a resumed run extends."""
        return self._view(self._store.raw_rows())

    def ids(self) -> set[str]:
        """Every chunk id already in the pool, kept or dropped, as written (what a resumed run
        skips: every copy of a chunk already embedded)."""
        return set(self.raw_ledger().column("id").to_pylist())

    def __len__(self) -> int:
        """Kept (embedded) chunks."""
        led = self.ledger()
        return int(pc.sum(pc.equal(led.column("drop"), "")).as_py() or 0)

    def source_counts(self) -> dict[str, int]:
        """Kept chunks per source (sources whose every chunk was dropped count 0)."""
        led = self.ledger()
        kept = led.filter(pc.equal(led.column("drop"), ""))
        out = {s: 0 for s in sorted(set(led.column("source").to_pylist()))}
        for s in kept.column("source").to_pylist():
            out[s] += 1
        return out

    # -- projected reads of kept rows -------------------------------------------------------

    def read(self, columns: Sequence[str] = (), ids: Sequence[str] | None = None) -> pa.Table:
        """`id` plus `columns` of the kept chunks (of `ids` only, when given), sorted by id."""
        wanted = [c for c in dict.fromkeys(columns) if c != "id"]
        cached = [c for c in wanted if c != "text"]
        table = self._kept(cached).select(["id", *cached])
        if ids is not None:
            table = table.filter(pc.is_in(table.column("id"), pa.array(sorted(set(ids)), pa.string())))
        if "text" in wanted:
            texts = self._store.only_kept(self._store.read(["id", "text"], filter=KEPT & pc.field("id").isin(
                table.column("id"))))
            table = table.append_column("text", texts.column("text"))
        return table.select(["id", *wanted])

    def _kept(self, columns: list[str]) -> pa.Table:
        store = self._store
        if store.kept is None:
            led = Pool((), _store=store).ledger()  # the whole pool's: views share one cache
            store.kept = led.filter(pc.equal(led.column("drop"), "")).select(["id", "source", "num_tokens", "doc_id"])
        missing = [c for c in columns if c not in store.kept.column_names]
        if missing:
            extra = store.only_kept(store.read(["id", *missing], filter=KEPT))
            if extra.num_rows != store.kept.num_rows:
                raise UserError(f"pool {self.folder}: shards changed while being read; rerun")
            for c in missing:
                store.kept = store.kept.append_column(c, extra.column(c))
        return self._view(store.kept)

    def _view(self, table: pa.Table) -> pa.Table:
        return table if self.source is None else table.filter(pc.equal(table.column("source"), self.source))

    def dataset(self, columns: Sequence[str]):
        """A Ray Dataset of `id` + `columns` of the kept chunks (for actor stages over the pool)."""
        import ray
        from ray.data.expressions import col

        wanted = ["id", *[c for c in dict.fromkeys(columns) if c != "id"]]
        fs, _ = storage.filesystem(self.shard_uris[0])
        paths = [storage.filesystem(u)[1] for u in self.shard_uris]
        cond = col("drop") == ""
        if self.source is not None:
            cond = cond & (col("source") == self.source)
        extra = [c for c in ("drop", "source") if c not in wanted]
        shadowed = self._shadowed()
        any_shadowed = len(shadowed) > 0
        ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=any_shadowed)
        ds = ds.select_columns(wanted + extra + (["path"] if any_shadowed else [])).filter(expr=cond)
        if any_shadowed:  # rows stored as kept that the resolution drops (repeats): rarely any
            ds = ds.map_batches(_drop_rows, fn_args=(shadowed,), batch_format="pyarrow")
        return ds.drop_columns(extra) if extra else ds

    def _shadowed(self) -> pa.Array:
        """shard/id keys of the rows stored as kept that the resolution drops."""
        res = self._store.resolved()
        mask = pc.and_(pc.not_equal(res.column("drop"), ""), pc.equal(res.column("raw_drop"), ""))
        hit = res.filter(mask)
        return _row_keys(hit.column("shard"), hit.column("raw_id"))

    # -- counts for the manifest -------------------------------------------------------------

    def counts(self, selected: Sequence[str] = ()) -> dict:
        """Documents, chunks, drops by reason, embedded and selected chunks, overall and per source."""
        ledger = self.ledger()
        chosen = set(selected)
        per_source: dict[str, dict] = {}
        reasons: dict[str, int] = {}
        for r in ledger.to_pylist():
            s = per_source.setdefault(r["source"], {"documents": set(), "chunks": 0, "embedded": 0,
                                                    "tokens_embedded": 0, "selected": 0})
            s["documents"].update(r["doc_id"].split(" "))  # a packed sequence names all its documents
            s["chunks"] += int(r["num_tokens"] > 0)  # a document dropped whole has no tokens
            if r["drop"]:
                reasons[r["drop"]] = reasons.get(r["drop"], 0) + 1
            else:
                s["embedded"] += 1
                s["tokens_embedded"] += int(r["num_tokens"])
                s["selected"] += int(r["id"] in chosen)
        per_source = {k: {**v, "documents": len(v["documents"])} for k, v in sorted(per_source.items())}
        return {
            "documents": sum(s["documents"] for s in per_source.values()),
            "chunks": sum(s["chunks"] for s in per_source.values()),
            "dropped": dict(sorted(reasons.items())),
            "duplicates": reasons.get("duplicate", 0),
            "embedded": sum(s["embedded"] for s in per_source.values()),
            "selected": sum(s["selected"] for s in per_source.values()),
            "per_source": per_source,
        }


def _row_keys(shards: pa.Array, ids: pa.Array) -> pa.Array:
    """One string per row naming where a stored row is: `<shard file>/<chunk id>` (a shard holds
    each id once as kept: repeats within a shard are dropped when it is written)."""
    return pc.binary_join_element_wise(shards, ids, "/")


def _drop_rows(batch: pa.Table, keys: pa.Array) -> pa.Table:
    names = pc.replace_substring_regex(batch.column("path"), pattern=r"^.*/", replacement="")
    return batch.filter(pc.invert(pc.is_in(_row_keys(names, batch.column("id")), value_set=keys))).drop_columns(["path"])


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
