import pytest

from cola_ray import models
from cola_ray.errors import UserError
from tests import tinymodels


@pytest.mark.parametrize("arch, n_layers, block", [("llama", 4, "LlamaDecoderLayer"),
                                                   ("qwen2", 3, "Qwen2DecoderLayer"),
                                                   ("gpt2", 3, "GPT2Block")])
def test_decoder_layers_found_structurally(tmp_path, tiny_tokenizer_dir, arch, n_layers, block):
    path = tinymodels.build_model(tmp_path / arch, arch, tiny_tokenizer_dir)
    lm = models.load_causal_lm(str(path))
    layers = models.find_decoder_layers(lm)
    assert len(layers) == n_layers
    assert {type(layer).__name__ for layer in layers} == {block}


def test_parse_layers():
    assert models.parse_layers("all", 4) == [0, 1, 2, 3]
    assert models.parse_layers("-1", 4) == [3]
    assert models.parse_layers("0,2,-1", 4) == [0, 2, 3]
    with pytest.raises(UserError, match="out of range"):
        models.parse_layers("7", 4)
    with pytest.raises(UserError, match="--layers"):
        models.parse_layers("a,b", 4)


def test_bad_model_paths(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        models.resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_model_path(str(tmp_path))
