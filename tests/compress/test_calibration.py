"""The calibration set reaches llm-compressor exactly as given, and compress() guards its inputs."""

from __future__ import annotations

import json

import pytest
import torch

from cola_ray.compress import compress, weight_summary
from cola_ray.errors import UserError


class EmbeddingInputs:
    """Records the token ids every nn.Embedding receives while active (a global forward
    pre-hook, so it also sees the copy of the model that compress() works on)."""

    def __enter__(self):
        self.seen: list[list[int]] = []
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._record)
        return self

    def _record(self, module, args):
        if isinstance(module, torch.nn.Embedding):
            assert args[0].shape[0] == 1, "calibration batches must hold one sequence"
            self.seen.append(args[0][0].tolist())

    def __exit__(self, *exc):
        self._handle.remove()


@pytest.mark.parametrize("recipe", ["gptq-w4a16", "wanda-50"])
def test_calibration_token_ids_reach_the_model_unchanged(llama, calibration, recipe):
    model, tok = llama
    with EmbeddingInputs() as inputs:
        compress(model, tok, calibration, recipe)
    assert {tuple(s) for s in inputs.seen} == {tuple(c) for c in calibration}
    # one full pass over the set, each sequence whole, in llm-compressor's longest-first order
    assert inputs.seen[: len(calibration)] == sorted(calibration, key=len, reverse=True)


def test_max_seq_length_truncates_each_sequence(llama, calibration):
    model, tok = llama
    with EmbeddingInputs() as inputs:
        compress(model, tok, calibration, "wanda-50", max_seq_length=32)
    assert {tuple(s) for s in inputs.seen} == {tuple(c[:32]) for c in calibration}


def test_data_free_recipe_runs_no_forward_pass(llama):
    model, tok = llama
    with EmbeddingInputs() as inputs:
        out = compress(model, tok, [], "rtn-w4a16")
    assert inputs.seen == [] and weight_summary(out)["quantized_layers"] == 28


@pytest.mark.parametrize(
    "calibration, culprit",
    [([], "empty"), ([[5, 6], []], "sequence 1"), ([[5, 600]], "token id 600"), ([[-1, 3]], "token id -1")],
)
def test_bad_calibration_is_a_user_error(llama, calibration, culprit):
    model, tok = llama
    with pytest.raises(UserError, match=culprit):
        compress(model, tok, calibration, "gptq-w4a16")


def test_in_memory_model_and_save_dir(llama, calibration, tmp_path):
    """A model whose name_or_path points nowhere (built in memory) still compresses and saves;
    the checkpoint reloads to the same outputs."""
    from transformers import AutoModelForCausalLM

    model, tok = llama
    original, model.config.name_or_path = model.config.name_or_path, "built-in-memory"
    try:
        out = compress(model, tok, calibration, "gptq-w4a16", save_dir=tmp_path / "ckpt")
    finally:
        model.config.name_or_path = original
    assert out.config.name_or_path == "built-in-memory"
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    assert (tmp_path / "ckpt" / "tokenizer.json").exists()
    x = torch.tensor([calibration[0]])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert torch.allclose(reloaded(x).logits, out(x).logits, atol=1e-4)


def test_inplace_compresses_the_given_model(tiny_llama, calibration):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    threads = torch.get_num_threads()
    out = compress(model, AutoTokenizer.from_pretrained(tiny_llama), calibration, "wanda-50", inplace=True,
                   num_threads=1)
    assert out is model and weight_summary(model)["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert torch.get_num_threads() == threads  # num_threads applies to the compression only
