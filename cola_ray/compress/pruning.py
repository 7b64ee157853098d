"""Pruning recipes: SparseGPT and Wanda, unstructured or N:M.

Mask structure follows llm-compressor's convention: "N:M" zeroes N of every M consecutive input
weights of a row ("2:4" and "4:8" are both 50% sparse, in hardware-friendly blocks); "0:0" is
unstructured, where `sparsity` sets the fraction zeroed per layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cola_ray.compress.registry import LINEAR, register_recipe
from cola_ray.errors import UserError

KEEP_LM_HEAD = ("re:.*lm_head",)


def pruning_args(sparsity: float, mask_structure: str, targets: Sequence[str], ignore: Sequence[str]) -> dict:
    """The arguments every pruning modifier takes, checked first."""
    check_sparsity(sparsity, mask_structure)
    return {"sparsity": sparsity, "mask_structure": mask_structure, "targets": list(targets), "ignore": list(ignore)}


def check_sparsity(sparsity: float, mask_structure: str) -> None:
    """Reject settings llm-compressor would only fail on deep inside calibration (or accept
    silently, like a 4:2 mask)."""
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0.0 < sparsity < 1.0:
        raise UserError(f"sparsity {sparsity!r}: expected a fraction between 0 and 1")
    m = re.fullmatch(r"(\d+):(\d+)", str(mask_structure))
    unstructured = m is not None and m.groups() == ("0", "0")
    if m is None or not (unstructured or 0 < int(m.group(1)) < int(m.group(2))):
        raise UserError(f"mask_structure {mask_structure!r}: expected 'N:M' with 0 < N < M, or '0:0' (unstructured)")


@register_recipe("sparsegpt-2of4", mask_structure="2:4")
@register_recipe("sparsegpt-50")
def sparsegpt(
    sparsity: float = 0.5,
    mask_structure: str = "0:0",
    targets: Sequence[str] = LINEAR,
    ignore: Sequence[str] = KEEP_LM_HEAD,
    block_size: int = 128,
    dampening_frac: float = 0.01,
) -> list:
    """SparseGPT: prune and update the remaining weights with the calibration Hessian."""
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    return [
        SparseGPTModifier(**pruning_args(sparsity, mask_structure, targets, ignore), block_size=block_size,
                          dampening_frac=dampening_frac)
    ]


@register_recipe("wanda-4of8", mask_structure="4:8")
@register_recipe("wanda-50")
def wanda(
    sparsity: float = 0.5,
    mask_structure: str = "0:0",
    targets: Sequence[str] = LINEAR,
    ignore: Sequence[str] = KEEP_LM_HEAD,
) -> list:
    """Wanda: prune the weights with the smallest |weight| x input-activation norm; no update."""
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    return [WandaPruningModifier(**pruning_args(sparsity, mask_structure, targets, ignore))]
