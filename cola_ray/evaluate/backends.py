"""The lm-eval model an evaluation runs on: HFLM around the in-memory model (the default, and the
only choice on CPU), or vLLM (`--eval-backend vllm`, CUDA machines with the `vllm` extra)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cola_ray.errors import UserError

BACKENDS = ("hf", "vllm")


def build_lm(model, tokenizer, backend: str = "hf", batch_size: int = 8, workdir: Path | None = None,
             max_length: int | None = None):
    """An lm-eval LM for `model` (a loaded transformers model, or a checkpoint folder).

    vLLM loads checkpoints, not Python objects: an in-memory model is saved to `workdir` first
    (compressed models in compressed-tensors format, which vLLM serves natively). Pass the folder
    written by compress(save_dir=...) to skip that copy.
    """
    if backend == "hf":
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise UserError("--eval-backend vllm: the vllm package is not installed "
                            "(it needs a CUDA machine: pip install 'cola-ray[vllm]')")
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(**vllm_model_args(checkpoint_folder(model, tokenizer, workdir), batch_size, max_length))
    raise UserError(f"--eval-backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def vllm_model_args(model_dir: str, batch_size: int, max_length: int | None = None) -> dict:
    """Keyword arguments for lm-eval's VLLM: the checkpoint and its tokenizer, lm-eval's batch
    size, the context length only when asked (vLLM otherwise takes the model's own)."""
    args = {"pretrained": str(model_dir), "tokenizer": str(model_dir), "batch_size": batch_size, "dtype": "auto"}
    if max_length is not None:
        args["max_model_len"] = max_length
    return args


def checkpoint_folder(model, tokenizer, workdir: Path | None) -> str:
    """A folder vLLM can load: `model` itself when it is one, else a fresh save in workdir."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if workdir is None:
        raise UserError("--eval-backend vllm: an in-memory model needs a folder to be saved to")
    folder = Path(workdir) / "checkpoint"
    model.save_pretrained(folder)  # llm-compressor's wrapper (if compressed) writes packed weights
    tokenizer.save_pretrained(folder)
    return str(folder)
