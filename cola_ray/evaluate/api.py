"""evaluate(): score one model on a list of suites."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cola_ray.errors import UserError
from cola_ray.evaluate.backends import build_lm
from cola_ray.evaluate.registry import IncludePath, get_suite
from cola_ray.evaluate.scores import Scores


def evaluate(
    model,
    tokenizer,
    suites: list[str],
    limit: int | None = None,
    batch_size: int = 8,
    backend: str = "hf",
    include_path: IncludePath = None,
) -> Scores:
    """Run each suite on `model` and return all metrics in one flat Scores dict
    ("<suite>/<metric>" or "<suite>/<part>/<metric>"), with `.higher_is_better` per key.

    `limit` caps the documents (or problems) per lm-eval task, so a run on a small machine stays
    short; None runs everything. Suite names are resolved before the model is wrapped, so a typo
    fails at once.
    """
    if not suites:
        raise UserError("no evaluation suites given")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit {limit!r}: expected a positive number of documents per task")
    resolved = [get_suite(name, include_path) for name in suites]
    scores = Scores()
    with tempfile.TemporaryDirectory(prefix="cola-eval-") as workdir:
        lm = build_lm(model, tokenizer, backend, batch_size, Path(workdir))
        for suite in resolved:
            scores.merge(suite.run(lm, Path(workdir), limit))
    return scores
