"""lm-eval plumbing shared by every suite: task YAMLs written at run time, task lookup, one
`simple_evaluate` call per suite, and its nested results flattened into Scores.

Built-in suites generate their task YAML + data file in a scratch folder (data_files must be
absolute paths: lm-eval resolves relative ones against the current directory, not the YAML's)
and load it with a TaskManager that skips lm-eval's own ~15,000 tasks (indexing those costs
~20 s; it happens only when a name is not a built-in suite, once per process).
"""

from __future__ import annotations

import functools
import json
import math
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import yaml

from cola_ray.evaluate.registry import IncludePath, Suite
from cola_ray.evaluate.scores import Scores

# Entries of an lm-eval result that are bookkeeping, not metrics.
_NOT_METRICS = {"alias", "name", "sample_len", "samples", " "}


class FunctionRef(str):
    """A dotted path written as a YAML `!function` tag; lm-eval imports it when it loads the
    task (importable modules work, not only files next to the YAML)."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def write_task_yaml(folder: Path, config: dict) -> str:
    """Write one task config as <folder>/<task>.yaml and return the task name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{config['task']}.yaml").write_text(yaml.dump(config, Dumper=_TaskDumper, sort_keys=False))
    return config["task"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    """Write the task's documents; return the absolute path the YAML must name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path.resolve())


def local_task(task: str, data_file: str, output_type: str, **fields) -> dict:
    """The common part of a task that reads one JSONL file as its test split. The datasets
    cache goes beside the file, so a scratch folder takes it away with it (the data is rewritten
    for every run; left in ~/.cache it would pile up over a sweep)."""
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file},
                           "cache_dir": str(Path(data_file).parent / "hf-datasets-cache")},
        "test_split": "test",
        "output_type": output_type,
        **fields,
        "metadata": {"version": 1.0},
    }


def _paths_key(include_path: IncludePath) -> tuple[str, ...]:
    if include_path is None:
        return ()
    paths = include_path if isinstance(include_path, (list, tuple)) else [include_path]
    return tuple(str(Path(p).resolve()) for p in paths)


def _new_task_manager(paths: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths) or None, include_defaults=defaults)


# Lookups of user-named tasks reuse one index per set of folders for the whole process.
_task_manager = functools.cache(_new_task_manager)


def find_task(name: str, include_path: IncludePath = None):
    """The TaskManager that knows task/group/tag `name`, or None. The user's folders are
    searched alone first, so their tasks resolve without indexing lm-eval's built-ins."""
    paths = _paths_key(include_path)
    if paths and name in _task_manager(paths, False).all_tasks:
        return _task_manager(paths, False)
    manager = _task_manager(paths, True)
    return manager if name in manager.all_tasks else None


def run_tasks(lm, tasks: list[str], task_manager, limit: int | None, unsafe_code: bool = False) -> dict:
    """One lm-eval run; no bootstrap (stderr) and no per-sample logs: only the aggregates are kept."""
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=task_manager,
        limit=limit,
        bootstrap_iters=0,
        log_samples=False,
        confirm_run_unsafe_code=unsafe_code,
    )


def flatten(results: dict, suite: str, labels: dict[str, str]) -> Scores:
    """lm-eval's {task: {"metric,filter": value}} -> {"suite/label/metric": value}.

    `labels` maps each task name to the label used in keys ("" drops the level, for suites of a
    single task). The filter is kept only when it is not lm-eval's default "none"; stderr
    entries and non-numeric values are dropped."""
    scores = Scores()
    directions = results.get("higher_is_better", {})
    for task, entry in results["results"].items():
        label = labels.get(task, task)
        for key, value in entry.items():
            metric, _, filt = key.partition(",")
            if metric in _NOT_METRICS or metric.endswith("_stderr") or not _is_number(value):
                continue
            name = "/".join(p for p in (suite, label, metric if filt in ("", "none") else f"{metric}[{filt}]") if p)
            scores[name] = float(value)
            hib = directions.get(task, {}).get(metric)
            if hib is not None:
                scores.higher_is_better[name] = bool(hib)
    return scores


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))


class GeneratedTasksSuite(Suite):
    """A suite whose lm-eval tasks are written at run time (data + YAML) into its own folder."""

    unsafe_code: ClassVar[bool] = False  # set by suites that execute model output (lm-eval asks to confirm)

    @abstractmethod
    def write_tasks(self, folder: Path, lm) -> dict[str, str]:
        """Write the task files; return {task name: label in metric keys}."""

    def run(self, lm, workdir: Path, limit: int | None) -> Scores:
        folder = workdir / self.name
        labels = self.write_tasks(folder, lm)
        manager = _new_task_manager(_paths_key(folder), False)
        results = run_tasks(lm, list(labels), manager, limit, self.unsafe_code)
        return flatten(results, self.name, labels)


class LmEvalTask(Suite):
    """Any lm-eval task, group or tag, run as lm-eval defines it (datasets must be reachable:
    built-in tasks fetch theirs from the Hugging Face hub)."""

    def __init__(self, name: str, include_path: IncludePath = None):
        self.name = name
        self.include_path = include_path

    def run(self, lm, workdir: Path, limit: int | None) -> Scores:
        manager = find_task(self.name, self.include_path)
        results = run_tasks(lm, [self.name], manager, limit)
        return flatten(results, self.name, {self.name: ""})
