"""The registry of calibration selectors: a name -> a function that picks k chunks from a pool.

Every selector sees the same candidate pool (the embedded chunks of a curate run: its activation
shards) and returns the same small table, which `output.py` turns into the same
calibration.jsonl + manifest layout, so a sweep treats all selectors alike.

A selector function is `fn(pool, k, ctx) -> pa.Table | Selection` with the table's columns
  id           the chosen chunk
  cluster      int: the k-means cluster for `cola`; the selection rank (0 = chosen first) otherwise
  distance     float or null: distance to the centroid for `cola`; the selector's own score
               (documented per selector in `Selector.score`) otherwise
  cluster_size int or null: cluster members for `cola`; null otherwise
It sees one pool and one k: per-source quotas (COLA's source selection) are applied above it,
by the selection layer, which calls it once per source with that source's view of the pool
(workflows/selection.py), so every selector honours quotas the same way.
It must be deterministic (same pool, k and seed -> same rows) and must not depend on the order
of rows in the pool or on how the pool was sharded.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from cola_ray.errors import UserError
from cola_ray.pool import Pool
from cola_ray.registry import Registry

SELECTION_SCHEMA = pa.schema([("id", pa.string()), ("cluster", pa.int64()), ("distance", pa.float64()),
                              ("cluster_size", pa.int64())])


@dataclass(frozen=True)
class SelectorContext:
    """What a selector may use besides the pool: the model (perplexity), the seed, where and how
    to run a model, a folder of its own for caches (`work_dir`), its own typed parameters
    (`params`: an instance of the selector's `params` dataclass, built by `Selector.parse_params`),
    and the folder of the run's embedded probe pool when it has one (`probe_pool`)."""

    model: str
    seed: int = 0
    seq_len: int = 2048
    device: str = "auto"
    dtype: str = "auto"
    workers: int = 1
    batch_size: int = 8
    work_dir: str | None = None
    params: Any = None
    probe_pool: str | None = None  # the run's embedded probe chunks (with --capabilities): a target


@dataclass
class Selection:
    """What a selector returns: the chosen rows (SELECTION_SCHEMA), details for the manifest's
    `selection.details` (e.g. cola's k-means objective), and extra artifacts to write under the
    output folder (name -> Arrow table, written as a parquet folder, or numpy array, as .npy).
    When quotas split a selection by source, tables are concatenated with their `cluster`
    column offset like the selection's, and arrays stacked, in source order."""

    table: pa.Table
    details: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)


SelectFn = Callable[[Pool, int, SelectorContext], "pa.Table | Selection"]


@dataclass(frozen=True)
class NoParams:
    """A selector without parameters of its own."""


@dataclass(frozen=True)
class Selector:
    name: str
    fn: SelectFn
    description: str
    score: str  # what the `distance` column holds
    uses_seed: bool = True  # False: the same pool gives the same selection for every seed
    needs_model: bool = False
    variant: dict = field(default_factory=dict)  # fixed keyword arguments of this name (e.g. mode="low")
    params: type = NoParams  # a dataclass of the parameters a user may set (typed, with defaults)
    merge_details: Callable[[list[tuple[str, int, int, dict]]], dict] | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.params))

    def parse_params(self, values: dict | None = None):
        """The selector's params dataclass from a mapping; an unknown name or a wrong type is a
        one-line error naming the selector and the parameter."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.param_names))
        if unknown:
            raise UserError(f"--selector-params: selector {self.name!r} has no parameter {unknown[0]!r}"
                            f" (parameters: {', '.join(self.param_names) or 'none'})")
        hints = typing.get_type_hints(self.params)
        for name, value in values.items():
            kind = hints[name]
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if not ok and kind is float and isinstance(value, int) and not isinstance(value, bool):
                values[name], ok = float(value), True
            if not ok:
                raise UserError(f"--selector-params: {self.name}.{name}={value!r} is not a {kind.__name__}")
        parsed = self.params(**values)
        check = getattr(parsed, "check", None)
        if check is not None:
            check()
        return parsed

    def select(self, pool: Pool, k: int, ctx: SelectorContext) -> Selection:
        if ctx.params is None or isinstance(ctx.params, dict):
            ctx = dataclasses.replace(ctx, params=self.parse_params(ctx.params))
        out = self.fn(pool, k, ctx, **self.variant)
        out = out if isinstance(out, Selection) else Selection(out)
        out.table = out.table.select(SELECTION_SCHEMA.names).cast(SELECTION_SCHEMA)
        return out


SELECTORS: Registry[Selector] = Registry("selector", "cola_ray.selectors")


def register_selector(name: str, *, description: str, score: str, uses_seed: bool = True,
                      needs_model: bool = False, params: type = NoParams, merge_details=None,
                      **variant) -> Callable[[SelectFn], SelectFn]:
    """Register `fn` under `name`; `variant` keyword arguments are passed to fn (so one function
    can serve several names, e.g. perplexity low / mid / high); `params`: the dataclass of the
    selector's user-settable parameters (ctx.params holds an instance)."""

    def decorate(fn: SelectFn) -> SelectFn:
        SELECTORS.add(name, Selector(name, fn, description, score, uses_seed, needs_model, dict(variant), params,
                                   merge_details))
        return fn

    return decorate


def list_selectors() -> list[str]:
    return SELECTORS.names()


def get_selector(name: str) -> Selector:
    return SELECTORS.lookup(name)


def ranked(ids: list[str], scores: list[float | None]) -> pa.Table:
    """A selection table for rank-based selectors: `ids` in the order chosen."""
    return pa.table({"id": pa.array(ids, pa.string()), "cluster": pa.array(range(len(ids)), pa.int64()),
                     "distance": pa.array(scores, pa.float64()), "cluster_size": pa.nulls(len(ids), pa.int64())})
