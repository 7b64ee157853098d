"""Weight-only quantization recipes: GPTQ, AWQ, and round-to-nearest as the data-free reference.

All of them quantize the same way (a compressed-tensors preset such as W4A16, optionally with a
different group size); they differ in how the rounding is chosen: RTN rounds each weight alone,
GPTQ corrects the rounding error with second-order information from the calibration set, AWQ
rescales salient channels found from calibration activations before rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

from cola_ray.compress.registry import LINEAR, register_recipe
from cola_ray.errors import UserError

KEEP_LM_HEAD = ("lm_head",)


def weight_scheme(scheme: str, targets: Sequence[str], group_size: int | None = None) -> dict:
    """compressed-tensors config groups for preset `scheme` on `targets`.

    group_size None keeps the preset's (128 for the W*A16 presets), a positive value sets the
    number of input columns that share one scale, -1 gives one scale per output channel.
    In-features must be divisible by the group size (tiny test models use 128 and 384).
    """
    from compressed_tensors.quantization import QuantizationArgs, is_preset_scheme, preset_name_to_scheme

    if not isinstance(scheme, str) or not is_preset_scheme(scheme):
        raise UserError(f"quantization scheme {scheme!r}: not a compressed-tensors preset (e.g. W4A16, W4A16_ASYM, W8A16)")
    resolved = preset_name_to_scheme(scheme.upper(), list(targets))
    if group_size is not None:
        if resolved.weights is None:
            raise UserError(f"quantization scheme {scheme!r}: quantizes no weights, so group_size does not apply")
        resolved.weights = QuantizationArgs(**{**resolved.weights.model_dump(), **_grouping(group_size)})
    return {"group_0": resolved}


def _grouping(group_size: int) -> dict:
    if group_size == -1:
        return {"strategy": "channel", "group_size": None}
    if isinstance(group_size, int) and not isinstance(group_size, bool) and group_size > 0:
        return {"strategy": "group", "group_size": group_size}
    raise UserError(f"group_size {group_size!r}: expected a positive integer, or -1 for one scale per channel")


def quantization_args(scheme: str, group_size: int | None, targets: Sequence[str], ignore: Sequence[str]) -> dict:
    """The arguments every quantizing modifier takes: what to quantize, how, and what to skip."""
    return {"config_groups": weight_scheme(scheme, targets, group_size), "targets": list(targets), "ignore": list(ignore)}


@register_recipe("gptq-w3a16", scheme="W3A16")
@register_recipe("gptq-w4a16")
def gptq(
    scheme: str = "W4A16",
    group_size: int | None = None,
    targets: Sequence[str] = LINEAR,
    ignore: Sequence[str] = KEEP_LM_HEAD,
    block_size: int = 128,
    dampening_frac: float = 0.01,
    actorder: str | None = "static",
) -> list:
    """GPTQ weight quantization: rounding error corrected with the calibration Hessian."""
    from llmcompressor.modifiers.quantization import GPTQModifier

    return [
        GPTQModifier(**quantization_args(scheme, group_size, targets, ignore), block_size=block_size,
                     dampening_frac=dampening_frac, actorder=actorder)
    ]


@register_recipe("awq-w4a16")
def awq(
    scheme: str = "W4A16_ASYM",
    group_size: int | None = None,
    targets: Sequence[str] = LINEAR,
    ignore: Sequence[str] = KEEP_LM_HEAD,
    duo_scaling: bool | str = True,
    n_grid: int = 20,
) -> list:
    """AWQ: activation-aware channel scaling found on the calibration set, then quantization."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier

    check_awq_grid(n_grid, duo_scaling)
    return [
        AWQModifier(duo_scaling=duo_scaling, n_grid=n_grid),
        QuantizationModifier(**quantization_args(scheme, group_size, targets, ignore)),
    ]


def check_awq_grid(n_grid: int, duo_scaling: bool | str) -> None:
    """AWQ's grid spaces its points by n_grid-2 (duo_scaling True: the identity point is added
    separately), n_grid/2-1 ("both") or n_grid-1 (False); below these minimums llm-compressor
    divides by zero halfway through calibration."""
    minimum = {True: 3, "both": 4, False: 2}.get(duo_scaling)
    if minimum is None:
        raise UserError(f"duo_scaling {duo_scaling!r}: expected true, false or 'both'")
    if not isinstance(n_grid, int) or isinstance(n_grid, bool) or n_grid < minimum:
        raise UserError(f"n_grid {n_grid!r}: expected an integer >= {minimum} with duo_scaling={duo_scaling!r}")


@register_recipe("rtn-w4a16", calibrated=False)
def rtn(
    scheme: str = "W4A16",
    group_size: int | None = None,
    targets: Sequence[str] = LINEAR,
    ignore: Sequence[str] = KEEP_LM_HEAD,
) -> list:
    """Round-to-nearest quantization: data-free, the reference calibrated methods must beat."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(**quantization_args(scheme, group_size, targets, ignore))]
