"""Compress a model with a registered recipe on a given calibration set of token ids."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from cola_ray.compress.calibration import calibration_dataset
from cola_ray.compress.compat import config_on_disk, pinned_memory_only_with_accelerator, torch_threads
from cola_ray.compress.registry import get_recipe


def compress(
    model,
    tokenizer,
    calibration: Sequence[Sequence[int]],
    recipe: str,
    params: dict[str, Any] | None = None,
    max_seq_length: int | None = None,
    save_dir: str | os.PathLike | None = None,
    *,
    inplace: bool = False,
    num_threads: int | None = None,
):
    """Run llm-compressor's oneshot with recipe `recipe` and return the compressed model.

    - `calibration`: token-id lists, used exactly (truncated to `max_seq_length` if given);
      batch size 1, so no sequence is cut to the length of a shorter neighbour, and no shuffling.
      llm-compressor still visits them longest first (its LengthAwareSampler), which does not
      change what GPTQ/SparseGPT/Wanda/AWQ accumulate. Data-free recipes ignore it.
    - The returned model is a plain transformers model whose weights are fake-quantized or
      zeroed, ready for a normal forward pass. `inplace=False` (default) compresses a deep copy
      so the dense model stays available for comparison.
    - `save_dir`: also write the compressed checkpoint (packed compressed-tensors format) and
      the tokenizer there.
    """
    spec = get_recipe(recipe)
    modifiers = spec.modifiers(params)  # validate settings before any copy or forward pass
    dataset = None
    if spec.calibrated:
        vocab = model.get_input_embeddings().num_embeddings
        dataset = calibration_dataset(calibration, vocab, max_seq_length)
    target = model if inplace else copy.deepcopy(model)

    from llmcompressor import oneshot

    with torch_threads(num_threads), config_on_disk(target), pinned_memory_only_with_accelerator():
        oneshot(
            model=target,
            tokenizer=tokenizer,
            dataset=dataset,
            recipe=modifiers,
            num_calibration_samples=len(dataset) if dataset is not None else 0,
            shuffle_calibration_samples=False,
            max_seq_length=max_seq_length,
            batch_size=1,
        )
    if save_dir is not None:
        save_compressed(target, tokenizer, save_dir)
    return target


def save_compressed(model, tokenizer, save_dir: str | os.PathLike) -> None:
    """Write a compressed model in compressed-tensors format (packed int weights, sparse
    bitmasks) so vLLM can serve it, plus the tokenizer that goes with it."""
    os.makedirs(save_dir, exist_ok=True)
    with config_on_disk(model):  # llm-compressor's save also re-reads name_or_path (remote-code files)
        model.save_pretrained(save_dir, save_compressed=True)
    tokenizer.save_pretrained(save_dir)
