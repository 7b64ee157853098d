"""Probe sets for COLA stage 1: small collections of texts typical of a capability.

A probe set is what a capability *is* to stage 1: its texts are chunked and embedded exactly
like the candidates (same model, layers, projection), and each source's coverage of the
capability is measured against them. Built-in sets exist where real text ships offline (see
BUILTIN); any capability, built-in or not, takes its own with `--probes CAP=URI` (same formats
as --corpus). Built-in texts come from the probe split of the offline data (demo.split_of):
disjoint from the candidates and from every document the evaluation suites score, so that a
probe can steer selection (or `cola-ray score`) without tilting the evaluation.
"""

from __future__ import annotations

import itertools
import json
import os

from cola_ray import demo
from cola_ray.models import cache_dir

BUILTIN = {
    "general": "the probe split of the offline Wikipedia pages and news articles (disjoint from candidates and "
               "from the evaluation suites' documents)",
    "code": "the probe quarter of HumanEval (prompt + canonical solution; the humaneval suites evaluate the rest)",
}
_MAX_CHARS = 2000  # one or two chunks per probe text at the demo's seq_len: a probe is a sample


def _head(text: str, max_chars: int = _MAX_CHARS) -> str:
    """Whole paragraphs up to max_chars (at least the first one, cut to max_chars)."""
    out = ""
    for para in text.split("\n\n"):
        if out and len(out) + len(para) + 2 > max_chars:
            break
        out = f"{out}\n\n{para}" if out else para[:max_chars]
    return out


def _texts(capability: str) -> list[str]:
    if capability == "general":
        wiki, news = demo.domain_documents("wiki", "probes"), demo.domain_documents("news", "probes")
        # interleaved, so that a cut by --probe-max-docs keeps both kinds of text
        mixed = [t for pair in itertools.zip_longest(wiki, news) for t in pair if t]
        texts = [_head(t) for t in mixed]
    else:
        texts = [p["prompt"] + p["canonical_solution"] for p in demo.humaneval_problems("probes")]
    return list(dict.fromkeys(texts))  # the news file repeats a few articles: one probe each


def builtin_probe_file(capability: str) -> str | None:
    """Path of the built-in probe set of a capability (a jsonl written once to the cache), or
    None when there is none."""
    if capability not in BUILTIN:
        return None
    path = cache_dir() / "probes-v3" / f"{capability}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")  # concurrent first runs must not share a temp file
        with open(tmp, "w", encoding="utf-8") as f:
            for text in _texts(capability):
                f.write(json.dumps({"text": text}) + "\n")
        os.replace(tmp, path)
    return str(path)
