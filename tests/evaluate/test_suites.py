"""Each built-in suite scores the tiny model with finite numbers and the right directions, and
perplexity goes up when the model is damaged."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cola_ray.evaluate import evaluate, list_suites
from cola_ray.evaluate.humaneval import HumanEvalPass1, execution_results

LIMIT = 2  # documents per task: enough to exercise every code path on 2 CPU cores


def _finite(scores) -> bool:
    return bool(scores) and all(math.isfinite(v) for v in scores.values())


def test_built_in_suites_are_registered():
    assert {"ppl", "ppl-wiki", "ppl-news", "ppl-code", "humaneval-ll", "humaneval-pass1"} <= set(list_suites())


def test_perplexity_and_likelihood_suites_in_one_run(llama):
    model, tok = llama
    scores = evaluate(model, tok, ["ppl", "ppl-news", "humaneval-ll"], limit=LIMIT, batch_size=4)
    assert _finite(scores)
    for domain in ("wiki", "news", "code"):
        for metric in ("word_perplexity", "bits_per_byte"):
            assert f"ppl/{domain}/{metric}" in scores
    assert scores["ppl-news/word_perplexity"] == pytest.approx(scores["ppl/news/word_perplexity"])
    # aggregate: geometric mean of the domains' perplexities, arithmetic mean of bits per byte
    bpb = [scores[f"ppl/{d}/bits_per_byte"] for d in ("wiki", "news", "code")]
    assert scores["ppl/bits_per_byte"] == pytest.approx(sum(bpb) / 3)
    # a random-weight model over a 512-token vocabulary: about ln(512) nats per token
    assert scores["humaneval-ll/nll_per_token"] == pytest.approx(math.log(512), rel=0.1)
    assert set(scores.higher_is_better) == set(scores) and not any(scores.higher_is_better.values())


def test_pass_at_1_generates_and_executes(llama, tmp_path):
    from cola_ray.evaluate import build_lm

    model, tok = llama
    suite = HumanEvalPass1("humaneval-pass1", max_gen_toks=24)  # the registered one allows 512
    scores = suite.run(build_lm(model, tok, batch_size=4), tmp_path, limit=LIMIT)
    assert scores == {"humaneval-pass1/pass@1": 0.0}  # random weights write no working code
    assert scores.higher_is_better == {"humaneval-pass1/pass@1": True}


def test_pass_at_1_scoring_runs_the_problem_tests():
    from cola_ray.demo import humaneval_problems

    problem = {**humaneval_problems()[0], "timeout_s": 5.0}
    assert execution_results(problem, [problem["canonical_solution"]]) == {"pass@1": 1.0}
    assert execution_results(problem, ["    return None\n"]) == {"pass@1": 0.0}


def _zero_linear_weights(model, fraction: float, seed: int = 0):
    damaged = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in damaged.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[torch.rand(module.weight.shape, generator=gen) < fraction] = 0
    return damaged


def test_damaging_the_model_raises_perplexity(trained_llama):
    model, tok = trained_llama
    runs = {
        frac: evaluate(_zero_linear_weights(model, frac) if frac else model, tok, ["ppl-news"], limit=8)
        for frac in (0.0, 0.5, 0.9)
    }
    for metric in ("word_perplexity", "bits_per_byte"):
        values = [runs[frac][f"ppl-news/{metric}"] for frac in (0.0, 0.5, 0.9)]
        assert values[0] < values[1] < values[2], (metric, values)
