"""The registry of calibration selectors: a name -> a function that picks k chunks from a pool.

Every selector sees the same candidate pool (the embedded chunks of a curate run: its activation
shards) and returns the same small table, which `output.py` turns into the same
calibration.jsonl + manifest layout, so a sweep treats all selectors alike.

A selector function is `fn(pool, k, ctx) -> pa.Table` with columns
  id           the chosen chunk
  cluster      int: the k-means cluster for `cola`; the selection rank (0 = chosen first) otherwise
  distance     float or null: distance to the centroid for `cola`; the selector's own score
               (documented per selector in `Selector.score`) otherwise
  cluster_size int or null: cluster members for `cola`; null otherwise
It must be deterministic (same pool, k and seed -> same rows) and must not depend on the order
of rows in the pool or on how the pool was sharded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from cola_ray.errors import UserError

SELECTION_SCHEMA = pa.schema([("id", pa.string()), ("cluster", pa.int64()), ("distance", pa.float64()),
                              ("cluster_size", pa.int64())])


@dataclass(frozen=True)
class Pool:
    """The candidate pool: the kept (embedded) rows of a curate run's activation shards."""

    shard_uris: tuple[str, ...]

    def read(self, columns: list[str] | tuple[str, ...] = ()) -> pa.Table:
        """`id` plus `columns` of every embedded chunk, sorted by id (the pool's only order)."""
        from cola_ray import storage

        wanted = ["id", *[c for c in columns if c != "id"]]
        table = storage.read_parquet(list(self.shard_uris), wanted, filter=pc.field("drop") == "")
        return table.sort_by("id")


@dataclass(frozen=True)
class SelectorContext:
    """What a selector may use besides the pool: the model (perplexity), the seed, the k-means
    settings (cola), and a folder of its own for caches (`work_dir`)."""

    model: str
    seed: int = 0
    seq_len: int = 2048
    device: str = "auto"
    dtype: str = "auto"
    workers: int = 1
    batch_size: int = 8
    kmeans_iters: int = 25
    kmeans_restarts: int = 3
    kmeans_points_per_centroid: int = 256
    work_dir: str | None = None

    @classmethod
    def from_curate(cls, cfg, work_dir: str | None) -> "SelectorContext":
        names = cls.__dataclass_fields__.keys() - {"work_dir"}
        return cls(**{n: getattr(cfg, n) for n in names}, work_dir=work_dir)


SelectFn = Callable[[Pool, int, SelectorContext], pa.Table]


@dataclass(frozen=True)
class Selector:
    name: str
    fn: SelectFn
    description: str
    score: str  # what the `distance` column holds
    uses_seed: bool = True  # False: the same pool gives the same selection for every seed
    needs_model: bool = False
    params: dict = field(default_factory=dict)

    def select(self, pool: Pool, k: int, ctx: SelectorContext) -> pa.Table:
        table = self.fn(pool, k, ctx)
        return table.select(SELECTION_SCHEMA.names).cast(SELECTION_SCHEMA)


SELECTORS: dict[str, Selector] = {}


def register_selector(name: str, *, description: str, score: str, uses_seed: bool = True,
                      needs_model: bool = False, **params) -> Callable[[SelectFn], SelectFn]:
    """Register `fn` under `name`; `params` are passed to fn as keyword arguments (so one function
    can serve several names, e.g. perplexity low / mid / high)."""

    def decorate(fn: SelectFn) -> SelectFn:
        if name in SELECTORS:
            raise ValueError(f"selector {name!r} is already registered")
        bound = (lambda pool, k, ctx, _fn=fn, _p=dict(params): _fn(pool, k, ctx, **_p)) if params else fn
        SELECTORS[name] = Selector(name, bound, description, score, uses_seed, needs_model, dict(params))
        return fn

    return decorate


def list_selectors() -> list[str]:
    _load_builtins()
    return sorted(SELECTORS)


def get_selector(name: str) -> Selector:
    _load_builtins()
    try:
        return SELECTORS[name]
    except KeyError:
        raise UserError(f"unknown selector {name!r} (expected one of {', '.join(sorted(SELECTORS))})") from None


def _load_builtins() -> None:
    """Import the built-in selector modules (they register themselves); cheap: no torch."""
    from cola_ray.selectors import cola, lexical, perplexity, sampling  # noqa: F401


def ranked(ids: list[str], scores: list[float | None]) -> pa.Table:
    """A selection table for rank-based selectors: `ids` in the order chosen."""
    return pa.table({"id": pa.array(ids, pa.string()), "cluster": pa.array(range(len(ids)), pa.int64()),
                     "distance": pa.array(scores, pa.float64()), "cluster_size": pa.nulls(len(ids), pa.int64())})
