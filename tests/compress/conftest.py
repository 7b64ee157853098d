"""A loaded tiny Llama and a few short real-text calibration sequences of distinct lengths."""

from __future__ import annotations

import pytest

from cola_ray.compress.compat import torch_threads


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: the 2 cores are shared with other test processes, and with two
    threads each a busy machine made torch runs up to 100x slower (threads spin waiting)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def llama(tiny_llama):
    """(model, tokenizer). compress() works on a copy by default, so tests may share one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def calibration(llama) -> list[list[int]]:
    """Four news articles (candidate split) as token ids, cut to 64, 56, 48 and 40 tokens."""
    from cola_ray.demo import domain_documents

    _, tok = llama
    docs = domain_documents("news", "candidates")[:4]
    return [tok(text, add_special_tokens=False).input_ids[:n] for text, n in zip(docs, (64, 56, 48, 40))]
