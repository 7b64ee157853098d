"""Per-chunk routed-token counts per expert of each MoE layer, captured in the activation pass.

Experts that see few or no calibration tokens get broken or NaN scales when a mixture-of-experts
model is compressed, so the pool records, for every chunk, how many of its tokens each expert of
each MoE layer receives: the column `expert_tokens` (cola_ray/pool/), int32, one count per (MoE layer,
expert), the layers in depth order. Its layout (`layout()`) goes in the shard metadata.

MoE layers are found structurally, like the decoder layers: a decoder layer is an MoE layer when
one of its modules is named `experts` and has `num_experts` (every transformers >= 5 MoE model:
Mixtral, Qwen2-/Qwen3-MoE, OLMoE, DeepSeek-V2/V3, Granite-MoE, Phi-MoE, ...). Those modules are
called as `experts(hidden [tokens, hidden], top_k_index [tokens, k], top_k_weights)` after the
router has decided, so a forward pre-hook reads the *actual* routing (DeepSeek's group-limited,
bias-corrected choice included) instead of re-deriving it from router logits. Written by hand:
neither transformers nor the compressors expose per-sample routing counts.

Counted tokens: every real (attention-masked) token, BOS included, because that is what a
compressor's calibration forward feeds the experts; padding is not. The hook needs the
token axis to be the flattened [batch x sequence] of the forward (what those models pass);
a layer that passes anything else is left out with a warning.
"""

from __future__ import annotations

import inspect
import logging

import numpy as np

log = logging.getLogger(__name__)


def find_moe_layers(blocks) -> list[tuple[int, object, int]]:
    """(decoder layer index, its experts module, number of experts) of each MoE layer."""
    out = []
    for i, block in enumerate(blocks):
        for name, module in block.named_modules():
            experts = getattr(module, "num_experts", None)
            if name.rsplit(".", 1)[-1] == "experts" and isinstance(experts, int) and experts > 0:
                out.append((i, module, experts))
                break
    return out


def config_experts(config) -> int | None:
    """The routed experts per MoE layer a model config declares (None: a dense model)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 1:
            return value
    return None


class ExpertCounter:
    """Forward pre-hooks on the experts modules; after each forward, `counts()` gives
    [batch, sum of experts over layers] int32: the tokens of each row each expert received."""

    def __init__(self, blocks, top_k: int | None = None):
        self.layers = find_moe_layers(blocks)
        self.top_k = top_k
        self._mask = None
        self._captured: dict[int, object] = {}
        self._handles = [module.register_forward_pre_hook(self._hook(i, module, e), with_kwargs=True)
                         for i, (_, module, e) in enumerate(self.layers)]

    def __bool__(self) -> bool:
        return bool(self.layers)

    @property
    def deepest(self) -> int:
        return self.layers[-1][0]

    def layout(self) -> dict:
        return {"layers": [i for i, _, _ in self.layers], "experts": [e for _, _, e in self.layers],
                "top_k": self.top_k}

    def start(self, attention_mask) -> None:
        """Called before each forward: the rows' real tokens (bool [batch, seq])."""
        self._mask = attention_mask
        self._captured.clear()

    def _hook(self, slot: int, module, n_experts: int):
        names = list(inspect.signature(module.forward).parameters)
        index_name = names[1] if len(names) > 1 else None
        warned = []

        def hook(_module, args, kwargs):
            if self._mask is None:
                return None
            index = args[1] if len(args) > 1 else kwargs.get(index_name)
            batch, seq = self._mask.shape
            if index is None or index.dim() != 2 or index.shape[0] != batch * seq:
                if not warned:
                    warned.append(True)
                    log.warning("MoE layer %d: routing not readable (%s); its experts are not counted",
                                self.layers[slot][0], None if index is None else tuple(index.shape))
                return None
            self._captured[slot] = _row_counts(index, self._mask, n_experts)
            return None

        return hook

    def counts(self) -> np.ndarray:
        """[batch, total experts] int32 of the last forward (zeros for a layer not reached)."""
        import torch

        batch = self._mask.shape[0]
        parts = [self._captured.get(i, torch.zeros((batch, e), dtype=torch.int32)).cpu()
                 for i, (_, _, e) in enumerate(self.layers)]
        return torch.cat(parts, 1).numpy().astype(np.int32)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _row_counts(index, mask, n_experts: int):
    """index [batch*seq, k] expert ids, mask [batch, seq] -> [batch, n_experts] int32 counts
    over the real tokens (an id outside 0..n-1, which some routers use for 'no expert', is not
    counted)."""
    import torch

    batch, seq = mask.shape
    rows = torch.arange(batch, device=index.device).repeat_interleave(seq).unsqueeze(1).expand_as(index)
    keep = mask.reshape(-1, 1).to(index.device).expand_as(index) & (index >= 0) & (index < n_experts)
    flat = (rows * n_experts + index)[keep]
    return torch.bincount(flat, minlength=batch * n_experts).view(batch, n_experts).to(torch.int32)
