"""Compression recipes (llm-compressor) applied to a calibration set of token ids.

Knows nothing of how the calibration set was chosen. Registering the built-in recipes costs no
llm-compressor import; that happens when a recipe is built.
"""

from cola_ray.compress.registry import RECIPES, Recipe, build_modifiers, get_recipe, list_recipes, register_recipe
from cola_ray.compress.run import compress, save_compressed
from cola_ray.compress.stats import effective_weight, weight_summary

__all__ = [
    "RECIPES",
    "Recipe",
    "build_modifiers",
    "compress",
    "effective_weight",
    "get_recipe",
    "list_recipes",
    "register_recipe",
    "save_compressed",
    "weight_summary",
]
