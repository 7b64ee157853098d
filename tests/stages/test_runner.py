"""Stages declared in base.py run the same with and without Ray: a function stage as Ray tasks,
a model stage as an actor pool (setup once per actor), and directly (setup + process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest

from cola_ray.stages import runner
from cola_ray.stages.base import FunctionStage, ModelStage, Resources, micro_batches
from cola_ray.stages.perplexity import PerplexityScorer
from tests.conftest import news_texts


def _double(batch: pa.Table, factor: int) -> pa.Table:
    return pa.table({"id": batch.column("id"), "x": pa.array([v * factor for v in batch.column("x").to_pylist()])})


@dataclass(kw_only=True)
class _WorkerPid(ModelStage):
    """A model stage that reports which worker process handled each row and its threads."""

    writes: ClassVar[tuple[str, ...]] = ("id", "pid", "threads")

    def process(self, batch: pa.Table) -> pa.Table:
        import os

        import torch

        n = batch.num_rows
        return pa.table({"id": batch.column("id"), "pid": [os.getpid()] * n, "threads": [torch.get_num_threads()] * n})


def _texts(n: int = 24) -> pa.Table:
    texts = news_texts()[:n]
    return pa.table({"id": [f"t{i:03d}" for i in range(n)], "text": texts})


def test_micro_batches_are_sorted_by_length_then_index():
    tokens = [[1, 2, 3], [1], [1, 2], [4], [1, 2, 3], []]
    assert list(micro_batches(tokens, 2)) == [[5, 1], [3, 2], [0, 4]]
    assert sorted(i for idx in micro_batches(tokens, 4) for i in idx) == list(range(6))


def test_function_stage_runs_directly_and_as_ray_tasks(ray_session):
    import ray

    stage = FunctionStage(_double, args=(3,), batch_size=4)
    table = pa.table({"id": [f"r{i}" for i in range(10)], "x": list(range(10))})
    direct = stage.process(table)
    assert direct.column("x").to_pylist() == [3 * i for i in range(10)]
    out = runner.run(ray.data.from_arrow(table), stage)
    assert pa.concat_tables(ray.get(out.to_arrow_refs())).sort_by("id").equals(direct.sort_by("id"))
    grouped = runner.run_grouped(ray.data.from_arrow(table.append_column("k", pa.array([i % 2 for i in range(10)]))),
                                 "k", FunctionStage(lambda g: pa.table({"k": [g.column("k")[0].as_py()], "n": [g.num_rows]})))
    assert sorted(grouped.take_all(), key=lambda r: r["k"]) == [{"k": 0, "n": 5}, {"k": 1, "n": 5}]


def test_model_stage_declares_resources_and_sets_up_once_per_actor(ray_session, tiny_llama):
    import ray

    stage = _WorkerPid(model=str(tiny_llama), device="cpu", batch_size=3)
    assert stage.stateful and stage.resources == Resources(cpus=1, gpus=0)
    assert runner.actor_resources(stage, 2)["num_cpus"] <= 1.0  # leaves a core to the tasks
    out = runner.run(ray.data.from_arrow(_texts(12)), stage, workers=2)
    rows = pa.concat_tables(ray.get(out.to_arrow_refs()))
    assert sorted(rows.column("id").to_pylist()) == [f"t{i:03d}" for i in range(12)]
    assert set(rows.column("threads").to_pylist()) == {runner.torch_threads(False, 2)}
    assert 1 <= len(set(rows.column("pid").to_pylist())) <= 2


def test_perplexity_scorer_gives_the_same_scores_with_and_without_ray(ray_session, tiny_llama):
    import ray

    table = _texts()
    scorer = PerplexityScorer(model=str(tiny_llama), seq_len=64, device="cpu", micro_batch_size=5, batch_size=8)
    assert scorer.reads == ("id", "text") and scorer.writes == ("id", "nll")
    with pytest.raises(AttributeError):
        scorer.lm  # noqa: B018 - nothing is loaded before setup()
    scorer.setup()
    direct = scorer.process(table)
    assert tuple(direct.column_names) == scorer.writes
    via_ray = pa.concat_tables(ray.get(runner.run(ray.data.from_arrow(table), scorer, workers=2).to_arrow_refs()))
    via_ray = via_ray.sort_by("id")
    assert via_ray.column("id").to_pylist() == direct.column("id").to_pylist()
    np.testing.assert_allclose(via_ray.column("nll").to_numpy(), direct.column("nll").to_numpy(), rtol=1e-4)
