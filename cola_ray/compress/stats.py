"""What compression did to a model's weights, measured on the weights themselves.

After oneshot a quantized Linear keeps float weights plus a scale and zero point, and its forward
pass rounds the weights on the fly (fake quantization); a pruned Linear simply holds zeros. These
helpers read back the weights the forward pass actually uses, for tests and run manifests.
"""

from __future__ import annotations

from collections.abc import Iterator


def compressible_linears(model) -> Iterator[tuple[str, object]]:
    """(name, module) of each Linear inside the decoder stack: the layers recipes target (the
    LM head and embeddings are left dense by every built-in recipe)."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            yield name, module


def effective_weight(module):
    """The weight a forward pass multiplies by: fake-quantized when a quantization scheme is
    attached to the module, the stored tensor otherwise."""
    import torch

    weight = module.weight.detach()
    scheme = getattr(module, "quantization_scheme", None)
    if scheme is None or scheme.weights is None:
        return weight
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize

    with torch.no_grad():
        return forward_quantize(module, weight, "weight", scheme.weights)


def weight_summary(model) -> dict:
    """Fraction of zeros and number of quantized layers over the compressible Linears."""
    zeros = total = quantized = layers = 0
    for _, module in compressible_linears(model):
        w = effective_weight(module)
        zeros += int((w == 0).sum())
        total += w.numel()
        layers += 1
        quantized += getattr(module, "quantization_scheme", None) is not None
    return {"linear_layers": layers, "sparsity": zeros / max(total, 1), "quantized_layers": quantized}
