"""Capability suites (lm-eval) that score an in-memory model: perplexity per domain, HumanEval,
and any lm-eval task by name. Knows nothing of compression or of calibration data."""

from cola_ray.evaluate.api import evaluate
from cola_ray.evaluate.backends import BACKENDS, build_lm, vllm_model_args
from cola_ray.evaluate.registry import SUITES, Suite, get_suite, list_suites, register_suite
from cola_ray.evaluate.scores import Scores, compare, degradation, retention

__all__ = [
    "BACKENDS",
    "SUITES",
    "Scores",
    "Suite",
    "build_lm",
    "compare",
    "degradation",
    "evaluate",
    "get_suite",
    "list_suites",
    "register_suite",
    "retention",
    "vllm_model_args",
]
