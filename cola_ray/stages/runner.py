"""The only code that talks to Ray Data's map operators: stages (base.py) in, Datasets out.

From a stage's declaration it chooses tasks (FunctionStage) or an actor pool (stateful
stages, `workers` actors), and applies the Ray policy once for every stage:

- resources: one GPU per actor on CUDA. On CPU, Ray's accounting must leave a core to the read,
  tokenize and shuffle tasks (actors hold their CPUs for life, and Ray Data starts them
  eagerly), so on a small node actors get a fractional share of the CPUs;
- torch threads: Ray sets OMP threads to an actor's (fractional) CPU share, so a CPU model
  actor is told to use its share of the cores instead;
- retries: Ray's defaults. Ray Data restarts a dead actor and retries its batch
  (max_restarts=-1 by default) and retries failed tasks; stages make that safe (shard names
  derive from their rows, so a retried batch rewrites the same file);
- batches are always pyarrow Tables.
"""

from __future__ import annotations

import dataclasses
import os

from cola_ray.stages.base import FunctionStage, Resources, Stage

BATCH_FORMAT = "pyarrow"


def cpu_budget() -> int:
    """CPUs of the Ray cluster (the local machine's if Ray reports none)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))


def actor_resources(stage: Stage, workers: int) -> dict:
    """Ray resource arguments of each of `workers` actors of `stage` (see the module doc)."""
    res = stage.resources
    if res.gpus:
        return {"num_gpus": res.gpus, "num_cpus": res.cpus}
    total = cpu_budget()
    return {"num_cpus": float(res.cpus) if total >= workers * res.cpus + 1 else max(0.1, (total - 1) / workers)}


def torch_threads(uses_gpu: bool, workers: int) -> int:
    """Torch threads of a model actor: one on GPU, else the node's cores split between actors."""
    return 1 if uses_gpu else max(1, (os.cpu_count() or 1) // workers)


def run(ds, stage: Stage, workers: int = 1):
    """`stage` over every batch of `ds` (lazily): Ray tasks for a FunctionStage, else an actor
    pool of `workers` actors, each running `setup()` once."""
    if isinstance(stage, FunctionStage):
        return ds.map_batches(stage.fn, **_fn_args(stage), batch_size=stage.batch_size,
                              batch_format=BATCH_FORMAT, **_task_resources(stage))
    import ray

    if getattr(stage, "threads", None) == 0:
        stage = dataclasses.replace(stage, threads=torch_threads(bool(stage.resources.gpus), workers))
    kwargs = {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage) if f.init}
    return ds.map_batches(_worker_class(stage), fn_constructor_kwargs=kwargs,
                          compute=ray.data.ActorPoolStrategy(size=workers), batch_size=stage.batch_size,
                          batch_format=BATCH_FORMAT, **actor_resources(stage, workers))


def run_grouped(ds, key: str, stage: FunctionStage, num_partitions: int | None = None):
    """`stage.fn` on all rows of each `key` value together (a hash shuffle: Ray Data's groupby),
    over at most 200 partitions, two per CPU by default."""
    parts = num_partitions or min(200, 2 * cpu_budget())
    return ds.groupby(key, num_partitions=parts).map_groups(stage.fn, **_fn_args(stage), batch_format=BATCH_FORMAT,
                                                            **_task_resources(stage))


def _fn_args(stage: FunctionStage) -> dict:
    return {k: v for k, v in (("fn_args", stage.args), ("fn_kwargs", stage.kwargs)) if v}


def _task_resources(stage: FunctionStage) -> dict:
    """Nothing for the default declaration: a task then takes Ray's default of one CPU."""
    res = stage.resources
    return {} if res == Resources() else {"num_cpus": res.cpus, "num_gpus": res.gpus}


def _worker_class(stage: Stage) -> type:
    """The stage's class, plus `setup()` at construction: Ray Data builds one per actor. It
    keeps the stage's name, which Ray shows in actor names and process titles."""
    cls = type(stage)

    def __init__(self, **kwargs):
        cls.__init__(self, **kwargs)
        self.setup()

    return type(stage.name, (cls,), {"__init__": __init__, "__qualname__": stage.name})
