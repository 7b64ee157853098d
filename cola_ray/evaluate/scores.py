"""Scores: a flat metric -> value dict that also knows which way each metric is better, and the
two comparisons a compression study reports (retention and degradation against the dense model).
"""

from __future__ import annotations

import math


class Scores(dict):
    """{"ppl-wiki/word_perplexity": 31.2, "humaneval-pass1/pass@1": 0.12, ...}: a plain dict
    (JSON-serialisable as is) plus `higher_is_better[key]`, taken from lm-eval's own metric
    definitions, so callers never guess a direction from a metric's name."""

    def __init__(self, values: dict[str, float] | None = None, higher_is_better: dict[str, bool] | None = None):
        super().__init__(values or {})
        self.higher_is_better: dict[str, bool] = dict(higher_is_better or {})

    def merge(self, other: Scores) -> None:
        self.update(other)
        self.higher_is_better.update(other.higher_is_better)


def retention(dense: float, compressed: float, higher_is_better: bool) -> float:
    """Share of the dense model's quality kept: 1.0 unchanged, below 1 worse, in both directions
    (accuracy: compressed/dense; perplexity: dense/compressed). NaN when undefined (a zero)."""
    num, den = (compressed, dense) if higher_is_better else (dense, compressed)
    return num / den if den else math.nan


def degradation(dense: float, compressed: float, higher_is_better: bool) -> float:
    """Relative change for the worse, as a fraction of the dense value: 0.1 = 10% worse
    (accuracy 10% lower, or perplexity 10% higher); negative = the compressed model is better."""
    change = (dense - compressed) if higher_is_better else (compressed - dense)
    return change / abs(dense) if dense else math.nan


def compare(dense: Scores, compressed: Scores) -> dict[str, dict[str, float]]:
    """Per metric present in both: the two values, retention and degradation."""
    out = {}
    for key in dense.keys() & compressed.keys():
        hib = dense.higher_is_better.get(key, compressed.higher_is_better.get(key))
        if hib is None:
            continue
        d, c = dense[key], compressed[key]
        out[key] = {"dense": d, "compressed": c, "retention": retention(d, c, hib), "degradation": degradation(d, c, hib)}
    return dict(sorted(out.items()))
