"""The maths of `cola-ray score`: how well a calibration set should preserve a capability,
predicted from statistics alone (no compression of the whole model, no evaluation).

Three proxies, each a number per (set, capability); the direction says which way is better:

1. coverage (activation space; the same projected vectors curate clusters):
   - `coverage_nn`: mean Euclidean distance from each probe chunk to its nearest set chunk (lower);
   - `coverage_share`: share of probes whose nearest set chunk is closer than the probes' own
     median leave-one-out nearest-neighbour distance (higher). The issue asked for the pool's
     median; the probes' is used so that sets from different pools (or no pool) are measured
     against one threshold.
2. statistics match (layerstats.py's per-chunk statistics, token-weighted over the set):
   - `moment_error`: mean over slots of ||m_set - m_probe|| / ||m_probe|| of the per-channel
     (bucketed) second moments: what Wanda and AWQ consume (lower);
   - `hessian_error`: the same relative Frobenius error of the sketched second-moment matrix
     P^T E[x x^T] P: what GPTQ and SparseGPT consume (lower);
   - `outlier_recall`: share of the probes' outlier-channel mass (each channel weighted by how many
     probe chunks flag it) that at least one set chunk also flags (higher).
3. layer-wise compression error (`layer_error`, lower): each Linear of the stat layers is
   compressed from the set's statistics alone, with llm-compressor's own per-layer routines
   (Wanda: the mask from the set's channel norms; SparseGPT: the OBS update from the set's
   Hessian; GPTQ: the OBS quantization from the set's Hessian), dense inputs, no sequential
   pipeline; then ||(W - W_hat) X_probe||^2 / ||W X_probe||^2 = tr(dW H_p dW^T) / tr(W H_p W^T)
   with H_p the probes' E[x x^T], averaged over those Linears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cola_ray.stages.layerstats import SLOT_STRIDE, unpack_sketch

LOWER_IS_BETTER = {"coverage_nn": True, "coverage_share": False, "moment_error": True, "hessian_error": True,
                   "outlier_recall": False, "layer_error": True}


@dataclass
class SetStats:
    """A set's (or a probe set's) statistics: slots x buckets moments, slots x r x r sketches,
    outlier-channel counts (slot * SLOT_STRIDE + channel -> chunks flagging it)."""

    moments: np.ndarray
    sketch: np.ndarray
    outliers: dict[int, int]
    chunks: int


def set_stats(moments: list, sketches: list, outliers: list, tokens: list[int], slots: int) -> SetStats:
    """Token-weighted means of per-chunk statistics (E[x^2] and E[xx^T] over all the set's tokens)."""
    w = np.asarray(tokens, np.float64)
    w = w / w.sum()
    m = np.stack([np.asarray(x, np.float64) for x in moments])
    s = np.stack([np.asarray(x, np.float64) for x in sketches])
    counts: dict[int, int] = {}
    for row in outliers:
        for c in set(np.asarray(row).tolist()):
            counts[c] = counts.get(c, 0) + 1
    return SetStats((w @ m).reshape(slots, -1), unpack_sketch((w @ s).reshape(slots, -1)), counts, len(tokens))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the leading (slot) axis of ||a - b|| / ||b|| (Frobenius for matrices)."""
    axes = tuple(range(1, a.ndim))
    num = np.sqrt(((a - b) ** 2).sum(axis=axes))
    den = np.sqrt((b ** 2).sum(axis=axes))
    return float(np.mean(num / np.maximum(den, 1e-30)))


def outlier_recall(target: dict[int, int], got: dict[int, int]) -> float:
    total = sum(target.values())
    return 1.0 if total == 0 else sum(w for c, w in target.items() if c in got) / total


def statistics_match(set_: SetStats, probe: SetStats) -> dict[str, float]:
    return {"moment_error": relative_error(set_.moments, probe.moments),
            "hessian_error": relative_error(set_.sketch, probe.sketch),
            "outlier_recall": outlier_recall(probe.outliers, set_.outliers)}


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def probe_threshold(probes: np.ndarray) -> float:
    """Median over probes of the distance to the nearest *other* probe."""
    if len(probes) < 2:
        return float("inf")
    d = _pairwise(probes, probes)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(1)))


def coverage(probes: np.ndarray, calibration: np.ndarray, threshold: float) -> dict[str, float]:
    """Exact nearest neighbours (probes x set is small: hundreds x hundreds)."""
    nn = _pairwise(probes, calibration).min(1)
    return {"coverage_nn": float(nn.mean()), "coverage_share": float((nn < threshold).mean())}


def slot_of(code: int) -> tuple[int, int]:
    return code // SLOT_STRIDE, code % SLOT_STRIDE


# -- layer-wise compression error -------------------------------------------------------------

def compress_weight(weight, family: str, params: dict, hessian=None, norms=None):
    """W_hat of one Linear from a set's statistics, by llm-compressor's per-layer routines.

    hessian: E[x x^T] of the set's inputs (SparseGPT, GPTQ); norms: E[x_c^2] (Wanda).
    """
    import torch

    with torch.no_grad():
        return _compress(weight.detach().to(torch.float32), family, params, hessian, norms)


def _compress(w, family: str, params: dict, hessian, norms):
    import torch

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w.clone()
    n, m = _mask(params.get("mask_structure", "0:0"))
    if family == "wanda":
        from llmcompressor.modifiers.pruning.wanda.wanda_sparsify import sparsify_weight

        return sparsify_weight(lin, {lin: norms.clone()}, params.get("sparsity", 0.5), n, m)
    if family == "sparsegpt":
        from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import sparsify_weight

        _, out = sparsify_weight(lin, {lin: 2 * hessian.clone()}, params.get("sparsity", 0.5), n, m,
                                 params.get("block_size", 128), params.get("dampening_frac", 0.01), False)
        return out
    if family == "gptq":
        return _gptq(w, hessian, params)
    raise ValueError(f"no layer-wise proxy for recipe family {family!r}")


def _mask(structure: str) -> tuple[int, int]:
    n, _, m = str(structure).partition(":")
    return int(n), int(m or 0)


def _gptq(w, hessian, params: dict):
    """GPTQ with min-max symmetric group scales (what llm-compressor's default observer gives)."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight

    bits = int(params.get("num_bits", 4))
    group = params.get("group_size") or w.shape[1]
    if w.shape[1] % group:
        group = w.shape[1]
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group)
    g = w.reshape(w.shape[0], -1, group)
    scale, zero = calculate_qparams(g.amin(-1), g.amax(-1), args)
    q, _, _ = quantize_weight(w[None].clone(), 2 * hessian[None].clone(), scale[None], zero[None], None, args,
                              blocksize=128, percdamp=params.get("dampening_frac", 0.01))
    return q[0]


def output_error(weight, compressed, probe_hessian) -> float:
    """||(W - W_hat) X||^2 / ||W X||^2 over the probes' inputs, via their E[x x^T]."""
    import torch

    w = weight.detach().to(torch.float64)
    dw = w - compressed.to(torch.float64)
    h = probe_hessian.to(torch.float64)
    return float(torch.einsum("ij,jk,ik->", dw, h, dw) / torch.einsum("ij,jk,ik->", w, h, w).clamp(min=1e-30))


def recipe_family(builder_name: str, defaults: dict) -> tuple[str, dict]:
    """A registered recipe's proxy family and the parameters the proxy uses."""
    params = dict(defaults)
    if builder_name == "gptq":
        scheme = str(params.get("scheme", "W4A16"))
        params["num_bits"] = int(scheme[1]) if scheme[:1] == "W" and scheme[1:2].isdigit() else 4
    if builder_name not in ("wanda", "sparsegpt", "gptq"):
        raise ValueError(builder_name)
    return builder_name, params
