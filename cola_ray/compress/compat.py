"""Workarounds for running llm-compressor 0.14 on in-memory models and on CPU-only machines.

Each is a context manager that undoes itself, so nothing leaks into code that runs after
compression (see ../shared/docs/resources.md, "llmcompressor on CPU").
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` torch threads (None: leave as is). Several compressions sharing a few cores
    each need n=1: oversubscribed intra-op threads made runs up to 7x slower."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def config_on_disk(model) -> Iterator[None]:
    """oneshot re-reads `config.name_or_path` from disk to check for an existing quantization,
    and llm-compressor's save_pretrained copies remote-code files from there (asking the Hub
    when the path is not a folder). A model built or modified in memory may point nowhere; give
    it a folder holding its config for the duration (the config alone, not the weights), then
    restore the name."""
    original = model.config.name_or_path
    if original and os.path.isfile(os.path.join(str(original), "config.json")):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="cola-config-") as folder:
        model.config.save_pretrained(folder)
        model.config.name_or_path = folder
        try:
            yield
        finally:
            model.config.name_or_path = original


@contextmanager
def pinned_memory_only_with_accelerator() -> Iterator[None]:
    """AWQ pins its cached activations before each grid search to speed host->device copies
    (IntermediatesCache.pin_memory); without an accelerator torch refuses to pin ("Cannot
    access accelerator device when none is available") and AWQ crashes. With nothing to copy
    to, pinning has no purpose: skip it, on CPU-only machines only and only while this runs."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original
