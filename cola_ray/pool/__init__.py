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

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.pool.resolution import drop_rows, resolve, row_keys
from cola_ray.pool.shards import (CORE_COLUMNS, IDENTITY_COLUMNS, KEPT, LEDGER_COLUMNS, META_KEY, OPTIONAL_COLUMNS,
                                  RAW_LEDGER_COLUMNS, SCHEMA_VERSION, STAT_COLUMNS, copies, make_shard, set_aside_unreadable,
                                  shard_name, shard_schema, shard_version, write_shard)
from cola_ray.pool.store import ShardStore

__all__ = ["Pool", "CORE_COLUMNS", "IDENTITY_COLUMNS", "KEPT", "LEDGER_COLUMNS", "META_KEY", "OPTIONAL_COLUMNS",
           "RAW_LEDGER_COLUMNS", "SCHEMA_VERSION", "STAT_COLUMNS", "copies", "make_shard", "resolve",
           "set_aside_unreadable", "shard_name", "shard_schema", "shard_version", "write_shard"]


class Pool:
    """The embedded candidate chunks of one curate run (its activation shards), or the view of
    one source of them (`only`)."""

    def __init__(self, shard_uris: Sequence[str], ledger: pa.Table | None = None, *, _store: ShardStore | None = None,
                 _source: str | None = None):
        """`ledger`: the raw ledger rows of these shards when the caller has them (what the
        activation actors returned: RAW_LEDGER_COLUMNS + shard), so they are not read back."""
        self._store = _store or ShardStore(tuple(sorted(shard_uris)), ledger)
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
            ds = ds.map_batches(drop_rows, fn_args=(shadowed,), batch_format="pyarrow")
        return ds.drop_columns(extra) if extra else ds

    def _shadowed(self) -> pa.Array:
        """shard/id keys of the rows stored as kept that the resolution drops."""
        res = self._store.resolved()
        mask = pc.and_(pc.not_equal(res.column("drop"), ""), pc.equal(res.column("raw_drop"), ""))
        hit = res.filter(mask)
        return row_keys(hit.column("shard"), hit.column("raw_id"))

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

