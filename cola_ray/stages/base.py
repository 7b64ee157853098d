"""What a pipeline stage is: a small declaration plus per-worker setup and a per-batch process.

A stage says what it needs (`resources`: CPUs, GPUs; `batch_size`: rows per Ray batch) and
which columns it `reads` and `writes`; the runner (runner.py) turns that into Ray Data calls,
so the Ray policy (actors or tasks, CPU shares, threads, retries) lives in one place and a
stage is tested without Ray: construct it (cheap: settings only), `setup()`, `process(batch)`.

Two forms:
- `Stage` (stateful): heavy state built once per worker in `setup()`; the runner runs it in an
  actor pool. Subclasses are keyword-only dataclasses, so their fields are exactly the settings
  a worker is rebuilt from.
- `FunctionStage`: a stateless per-batch function and its extra arguments; run as Ray tasks.

`ModelStage` is the shared base of the stages that run the causal LM (activation extraction,
perplexity scoring): device, dtype, torch threads, model + tokenizer loading, the pad id, and
length-sorted micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """Per worker: CPUs (Ray's accounting) and GPUs."""

    cpus: float = 1.0
    gpus: float = 0


@dataclass(kw_only=True)
class Stage:
    """A stateful stage: `setup()` once per worker, then `process()` per batch (an actor)."""

    stateful: ClassVar[bool] = True
    resources: ClassVar[Resources] = Resources()
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    batch_size: int | None = None  # rows per Ray batch; None: Ray's default (whole blocks)

    @property
    def name(self) -> str:
        return type(self).__name__

    def setup(self) -> None:
        """Build the per-worker state (load a model); runs once in each worker."""

    def process(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:  # what Ray Data calls on an actor
        return self.process(batch)


@dataclass(kw_only=True)
class FunctionStage(Stage):
    """A stateless `fn(batch, *args, **kwargs) -> pa.Table` (run as Ray tasks)."""

    stateful: ClassVar[bool] = False
    fn: Callable[..., pa.Table] = field(kw_only=False)
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def process(self, batch: pa.Table) -> pa.Table:
        return self.fn(batch, *self.args, **self.kwargs)


def micro_batches(token_lists: Sequence[Sequence[int]], size: int) -> Iterator[list[int]]:
    """Row indices in micro-batches of `size`, sorted by (length, index): similar lengths
    waste little on padding, and the order is the same on every run."""
    order = sorted(range(len(token_lists)), key=lambda i: (len(token_lists[i]), i))
    for lo in range(0, len(order), size):
        yield order[lo: lo + size]


@dataclass(kw_only=True)
class ModelStage(Stage):
    """A stage that runs the causal LM: one per actor, one GPU each on CUDA machines."""

    model: str
    device: str = "cpu"  # as models.pick_device takes it ("auto" resolves in each worker)
    dtype: str = "auto"
    micro_batch_size: int = 8  # sequences per forward pass
    threads: int = 0  # torch threads per worker; 0: the runner's choice (runner.torch_threads)

    @property
    def resources(self) -> Resources:
        from cola_ray.models import pick_device

        return Resources(cpus=1, gpus=1 if pick_device(self.device) == "cuda" else 0)

    def setup(self) -> None:
        import torch

        from cola_ray.models import load_causal_lm, load_tokenizer, pick_device

        self.device = pick_device(self.device)
        if self.threads:  # Ray sets OMP threads to the actor's (fractional) CPU share; use the cores
            torch.set_num_threads(self.threads)
        self.lm = load_causal_lm(self.model, self.device, self.dtype)
        self.tokenizer = load_tokenizer(self.model)
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def micro_batches(self, token_lists: Sequence[Sequence[int]]) -> Iterator[list[int]]:
        return micro_batches(token_lists, self.micro_batch_size)
