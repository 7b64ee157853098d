"""Each recipe, run for real on a tiny Llama, leaves the weights it promises: half zeros, N:M
blocks, or at most 2**bits levels per quantization group; the LM head and the dense model are
left alone."""

from __future__ import annotations

import pytest
import torch

from cola_ray.compress import compress, effective_weight
from cola_ray.compress.stats import compressible_linears

FAST_AWQ = {"n_grid": 3}  # the default 20-point grid search takes ~20 s even on the tiny model


@pytest.fixture(scope="module")
def compressed(llama, calibration):
    """compressed(recipe, params) -> model, each (recipe, params) compressed once per module."""
    cache = {}

    def run(recipe, params=None):
        key = (recipe, repr(params))
        if key not in cache:
            cache[key] = compress(llama[0], llama[1], calibration, recipe, params=params)
        return cache[key]

    return run


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: effective_weight(module) for name, module in compressible_linears(model)}


def _levels_per_group(w: torch.Tensor, group: int) -> int:
    """Most distinct values in any (row, group of input columns) block."""
    blocks = w.reshape(w.shape[0], -1, group).sort(dim=-1).values
    return int((1 + (blocks.diff(dim=-1) != 0).sum(dim=-1)).max())


def _assert_rest_untouched(dense, compressed):
    assert torch.equal(dense.lm_head.weight, compressed.lm_head.weight)
    assert torch.equal(dense.model.embed_tokens.weight, compressed.model.embed_tokens.weight)
    assert all((module.weight != 0).all() for _, module in compressible_linears(dense)), "dense model was modified"


@pytest.mark.parametrize("recipe", ["sparsegpt-50", "wanda-50"])
def test_unstructured_pruning_zeroes_half_of_every_layer(llama, compressed, recipe):
    model = compressed(recipe)
    for name, w in _weights(model).items():
        assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.01), name
    _assert_rest_untouched(llama[0], model)


@pytest.mark.parametrize("recipe, n, m", [("sparsegpt-2of4", 2, 4), ("wanda-4of8", 4, 8)])
def test_n_of_m_pruning_zeroes_n_in_every_block_of_m(llama, compressed, recipe, n, m):
    model = compressed(recipe)
    for name, w in _weights(model).items():
        zeros_per_block = (w.reshape(w.shape[0], -1, m) == 0).sum(dim=-1)
        assert (zeros_per_block == n).all(), name
    _assert_rest_untouched(llama[0], model)


def test_sparsity_is_overridable(compressed):
    model = compressed("wanda-50", {"sparsity": 0.3})
    zeros = [(w == 0).float().mean().item() for w in _weights(model).values()]
    assert zeros == pytest.approx([0.3] * len(zeros), abs=0.01)


@pytest.mark.parametrize(
    "recipe, params, bits",
    [("gptq-w4a16", None, 4), ("gptq-w3a16", None, 3), ("rtn-w4a16", None, 4), ("awq-w4a16", FAST_AWQ, 4)],
)
def test_quantization_leaves_at_most_2_to_the_bits_levels_per_group(llama, compressed, recipe, params, bits):
    dense = _weights(llama[0])
    model = compressed(recipe, params)
    for name, w in _weights(model).items():
        assert _levels_per_group(w, 128) <= 2**bits, name
        assert not torch.equal(w, dense[name]), name
        # still the same weights, rounded: the error stays well below the weights' own scale
        assert (w - dense[name]).abs().mean() < 0.5 * dense[name].abs().mean(), name
    _assert_rest_untouched(llama[0], model)


def test_fewer_bits_round_more_coarsely(llama, compressed):
    dense = _weights(llama[0])

    def error(recipe):
        return sum((w - dense[k]).abs().mean().item() for k, w in _weights(compressed(recipe)).items())

    assert error("gptq-w3a16") > 1.5 * error("gptq-w4a16")


def test_group_size_is_overridable(compressed):
    model = compressed("rtn-w4a16", {"group_size": 32})
    for name, module in compressible_linears(model):
        assert module.weight_scale.shape == (module.out_features, module.in_features // 32), name
        assert _levels_per_group(effective_weight(module), 32) <= 16, name
