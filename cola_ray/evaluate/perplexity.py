"""Perplexity on held-out text of each offline domain (wiki, news, code).

Runs as lm-eval `loglikelihood_rolling` tasks over documents the calibration candidates never
include (cola_ray.demo's 80/20 split). Reported per domain, all lower-is-better:
- word_perplexity: exp(total NLL / number of whitespace-separated words), the headline number;
- bits_per_byte: total NLL in bits / UTF-8 bytes, comparable across tokenizers.
Token perplexity is not reported: it changes with the tokenizer, so models would not compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cola_ray.demo import DOMAINS, domain_documents
from cola_ray.evaluate.lmeval import GeneratedTasksSuite, local_task, write_jsonl, write_task_yaml
from cola_ray.evaluate.registry import register_suite
from cola_ray.evaluate.scores import Scores

METRICS = ("word_perplexity", "bits_per_byte")


def rolling_perplexity_task(task: str, data_file: str) -> dict:
    return local_task(
        task,
        data_file,
        "loglikelihood_rolling",
        doc_to_text="",
        doc_to_target="text",
        metric_list=[{"metric": m, "aggregation": "weighted_perplexity" if m.endswith("perplexity") else m,
                      "higher_is_better": False} for m in METRICS],
    )


@dataclass(frozen=True)
class PerplexitySuite(GeneratedTasksSuite):
    """Perplexity over `domains`. Documents are cut to `max_chars` characters (code files and
    wiki pages run to tens of thousands) so a run costs about the same on every domain; the
    number of documents per domain is lm-eval's `limit`."""

    name: str
    domains: tuple[str, ...] = DOMAINS
    max_chars: int | None = 4000

    def write_tasks(self, folder: Path, lm) -> dict[str, str]:
        labels = {}
        for domain in self.domains:
            rows = [{"text": text[: self.max_chars]} for text in domain_documents(domain, "heldout")]
            task = write_task_yaml(folder, rolling_perplexity_task(f"cola_ppl_{domain}",
                                                                    write_jsonl(folder / f"{domain}.jsonl", rows)))
            labels[task] = domain if len(self.domains) > 1 else ""
        return labels

    def run(self, lm, workdir: Path, limit: int | None) -> Scores:
        scores = super().run(lm, workdir, limit)
        if len(self.domains) > 1:
            scores.merge(macro_average(scores, self.name, self.domains))
        return scores


def macro_average(scores: Scores, suite: str, domains: tuple[str, ...]) -> Scores:
    """Each domain counts once, however long its documents. Perplexities are averaged
    geometrically (the mean of log-perplexities, so one bad domain cannot swamp the others);
    bits per byte, already a log quantity, arithmetically."""
    out = Scores()
    for metric in METRICS:
        values = [scores[f"{suite}/{d}/{metric}"] for d in domains if f"{suite}/{d}/{metric}" in scores]
        if len(values) != len(domains):
            continue
        if metric.endswith("perplexity"):
            mean = math.exp(sum(math.log(v) for v in values) / len(values))
        else:
            mean = sum(values) / len(values)
        out[f"{suite}/{metric}"] = mean
        out.higher_is_better[f"{suite}/{metric}"] = False
    return out


for _domain in DOMAINS:
    register_suite(f"ppl-{_domain}")(partial(PerplexitySuite, domains=(_domain,)))
register_suite("ppl")(PerplexitySuite)
