"""The recipe registry: names, defaults, overrides from a YAML-like dict, and one-line errors."""

from __future__ import annotations

import pytest

from cola_ray.compress import build_modifiers, get_recipe, list_recipes, register_recipe
from cola_ray.compress.registry import RECIPES
from cola_ray.errors import UserError

BUILT_IN = ["awq-w4a16", "gptq-w3a16", "gptq-w4a16", "rtn-w4a16", "sparsegpt-2of4", "sparsegpt-50",
            "wanda-4of8", "wanda-50"]


def test_built_in_recipes_are_registered():
    assert set(BUILT_IN) <= set(list_recipes())
    assert not get_recipe("rtn-w4a16").calibrated
    assert all(get_recipe(n).calibrated for n in BUILT_IN if n != "rtn-w4a16")


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_recipe_builds_modifiers_with_its_defaults(name):
    mods = build_modifiers(name)
    assert mods and all(type(m).__module__.startswith("llmcompressor") for m in mods)


def test_variants_share_a_builder_but_not_defaults():
    assert get_recipe("sparsegpt-2of4").builder is get_recipe("sparsegpt-50").builder
    assert build_modifiers("sparsegpt-2of4")[0].mask_structure == "2:4"
    assert build_modifiers("wanda-4of8")[0].mask_structure == "4:8"
    assert build_modifiers("wanda-50")[0].mask_structure == "0:0"
    w3 = build_modifiers("gptq-w3a16")[0].config_groups["group_0"].weights
    assert (w3.num_bits, w3.group_size) == (3, 128)


def test_params_override_defaults():
    (sgpt,) = build_modifiers("sparsegpt-50", {"sparsity": 0.3, "ignore": ["re:.*lm_head", "re:.*k_proj"]})
    assert sgpt.sparsity == 0.3 and sgpt.ignore == ["re:.*lm_head", "re:.*k_proj"]
    (gptq,) = build_modifiers("gptq-w4a16", {"group_size": 64, "targets": ["re:.*mlp.*"]})
    group = gptq.config_groups["group_0"]
    assert (group.weights.group_size, group.weights.strategy, group.targets) == (64, "group", ["re:.*mlp.*"])
    (rtn,) = build_modifiers("rtn-w4a16", {"group_size": -1, "scheme": "W8A16"})
    assert (rtn.config_groups["group_0"].weights.strategy, rtn.config_groups["group_0"].weights.num_bits) == ("channel", 8)


@pytest.mark.parametrize(
    "name, params, culprit",
    [
        ("no-such-recipe", {}, "no-such-recipe"),
        ("wanda-50", {"sparsty": 0.5}, "sparsty"),
        ("wanda-50", {"sparsity": 1.5}, "1.5"),
        ("sparsegpt-50", {"mask_structure": "4:2"}, "4:2"),
        ("gptq-w4a16", {"scheme": "W9A16"}, "W9A16"),
        ("gptq-w4a16", {"group_size": 0}, "group_size 0"),
        ("gptq-w4a16", {"block_size": "big"}, "block_size"),
        ("awq-w4a16", {"n_grid": 2}, "n_grid 2"),
    ],
)
def test_bad_names_and_params_are_one_line_user_errors(name, params, culprit):
    with pytest.raises(UserError) as e:
        build_modifiers(name, params)
    message = str(e.value)
    assert culprit in message and "\n" not in message


def test_a_new_recipe_is_one_decorated_function():
    @register_recipe("test-wanda-2of4", mask_structure="2:4")
    def builder(sparsity: float = 0.5, mask_structure: str = "0:0") -> list:
        return [(sparsity, mask_structure)]

    try:
        assert get_recipe("test-wanda-2of4").defaults == {"sparsity": 0.5, "mask_structure": "2:4"}
        assert build_modifiers("test-wanda-2of4", {"sparsity": 0.6}) == [(0.6, "2:4")]
        with pytest.raises(ValueError):
            register_recipe("test-wanda-2of4")(builder)
    finally:
        RECIPES.pop("test-wanda-2of4")
