"""Models for the evaluation tests: the random tiny Llama, and the same one briefly trained.

A random-weight model predicts nearly uniformly, so damaging it barely moves (or even lowers)
its perplexity; 60 AdamW steps on news text (~5 s on 2 cores) give it something to lose.
"""

from __future__ import annotations

import pytest

from cola_ray.compress.compat import torch_threads


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: the 2 cores are shared with other test processes, and with two
    threads each a busy machine made training here take 765 s instead of 8 s (threads spin)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def llama(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="session")
def trained_llama(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cola_ray.demo import domain_documents

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor(tok("\n".join(domain_documents("news", "candidates")[:200])).input_ids)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with torch_threads(1):  # session fixture: set up before the module-scoped thread setting
        for _ in range(60):
            starts = torch.randint(0, len(ids) - 129, (8,), generator=gen)
            batch = torch.stack([ids[s : s + 128] for s in starts])
            model(batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
    return model.eval(), tok
