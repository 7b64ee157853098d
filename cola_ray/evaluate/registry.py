"""The registry of evaluation suites: a name -> something that scores a model and returns Scores.

Built-in suites are registered by name; any other name is looked up among lm-eval's tasks (and
the user's task folders, `include_path`) and run as it is, so `hellaswag` or a private YAML task
needs no code here. The built-in suites are the modules of this package that register
themselves (found by `cola_ray.registry.Registry` on the first lookup: a new suite is one file).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from cola_ray.errors import UserError
from cola_ray.evaluate.scores import Scores
from cola_ray.registry import Registry

IncludePath = str | Path | list[str | Path] | tuple[str | Path, ...] | None


class Suite(ABC):
    """Scores one model. `lm` is an lm-eval model (HFLM or VLLM) built once per evaluation and
    shared by all suites; `workdir` is a scratch folder for generated task files."""

    name: str

    @abstractmethod
    def run(self, lm, workdir: Path, limit: int | None) -> Scores: ...


SuiteFactory = Callable[[str], Suite]
SUITES: Registry[SuiteFactory] = Registry("evaluation suite", "cola_ray.evaluate")


def register_suite(name: str) -> Callable[[SuiteFactory], SuiteFactory]:
    """Register a factory (a Suite class, or a function) called as factory(name)."""

    def decorate(factory: SuiteFactory) -> SuiteFactory:
        SUITES.add(name, factory)
        return factory

    return decorate


def list_suites() -> list[str]:
    """The built-in (registered) suites; lm-eval task names are accepted too."""
    return SUITES.names()


def get_suite(name: str, include_path: IncludePath = None) -> Suite:
    if name in SUITES.load_builtins():
        return SUITES[name](name)
    from cola_ray.evaluate.lmeval import LmEvalTask, find_task  # lm-eval only when needed

    if find_task(name, include_path) is not None:
        return LmEvalTask(name, include_path)
    where = " or in --include-path" if include_path else ""
    raise UserError(
        f"unknown evaluation suite {name!r}: not a built-in suite ({', '.join(list_suites())}) "
        f"nor an lm-eval task{where}"
    )
