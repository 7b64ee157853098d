"""Suite lookup (built-in, user YAML tasks, unknown names), backends, and the score comparisons."""

from __future__ import annotations

import importlib.util
import math

import pytest

from cola_ray.errors import UserError
from cola_ray.evaluate import (Scores, build_lm, compare, degradation, evaluate, get_suite, retention,
                               vllm_model_args)

USER_TASK = """\
task: my_news_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: byte_perplexity
"""


def test_user_yaml_task_runs_through_include_path(llama, tmp_path):
    import json

    from cola_ray.demo import domain_documents

    data = tmp_path / "news.jsonl"
    data.write_text("".join(json.dumps({"text": t[:500]}) + "\n" for t in domain_documents("news", "heldout")[:3]))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_news_ppl.yaml").write_text(USER_TASK.format(data=data.resolve()))
    scores = evaluate(*llama, ["my_news_ppl"], limit=2, include_path=tmp_path / "tasks")
    assert list(scores) == ["my_news_ppl/byte_perplexity"] and math.isfinite(scores["my_news_ppl/byte_perplexity"])
    assert scores.higher_is_better == {"my_news_ppl/byte_perplexity": False}


def test_unknown_suite_is_a_user_error_naming_it(llama):
    with pytest.raises(UserError, match="'no-such-suite'"):
        evaluate(*llama, ["ppl-news", "no-such-suite"])  # fails before any suite runs


def test_lm_eval_task_names_resolve_without_running():
    assert get_suite("arc_easy").name == "arc_easy"


@pytest.mark.parametrize("kwargs, culprit", [({"suites": []}, "no evaluation suites"), ({"limit": 0}, "limit 0"),
                                             ({"backend": "onnx"}, "'onnx'")])
def test_bad_arguments_are_user_errors(llama, kwargs, culprit):
    with pytest.raises(UserError, match=culprit):
        evaluate(*llama, **{"suites": ["ppl-news"], **kwargs})


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_is_a_clear_user_error(llama, tmp_path):
    with pytest.raises(UserError, match="vllm package is not installed"):
        build_lm(*llama, backend="vllm", workdir=tmp_path)


def test_vllm_model_arguments():
    assert vllm_model_args("/ckpt", 16) == {"pretrained": "/ckpt", "tokenizer": "/ckpt", "batch_size": 16, "dtype": "auto"}
    assert vllm_model_args("/ckpt", 8, max_length=2048)["max_model_len"] == 2048


def test_retention_and_degradation_point_the_same_way_for_both_directions():
    # perplexity 10 -> 12 and accuracy 0.5 -> 0.4 are both losses
    assert retention(10.0, 12.0, higher_is_better=False) == pytest.approx(10 / 12)
    assert degradation(10.0, 12.0, higher_is_better=False) == pytest.approx(0.2)
    assert retention(0.5, 0.4, higher_is_better=True) == pytest.approx(0.8)
    assert degradation(0.5, 0.4, higher_is_better=True) == pytest.approx(0.2)
    assert math.isnan(retention(0.0, 0.0, higher_is_better=True))


def test_compare_uses_each_metrics_direction():
    dense = Scores({"a/ppl": 10.0, "b/acc": 0.5}, {"a/ppl": False, "b/acc": True})
    compressed = Scores({"a/ppl": 12.0, "b/acc": 0.6}, {"a/ppl": False, "b/acc": True})
    table = compare(dense, compressed)
    assert table["a/ppl"]["degradation"] == pytest.approx(0.2)
    assert table["b/acc"]["degradation"] == pytest.approx(-0.2)
