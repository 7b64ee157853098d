"""Per-chunk statistics of the inputs that compressors consume, captured in the activation pass.

Compressors read two statistics of each Linear layer's input X (tokens x channels): Wanda and
AWQ the per-input-channel second moment E[x_c^2]; GPTQ and SparseGPT the second-moment matrix
H = E[x x^T]. Quantization also suffers most from *outlier channels*. The activation pass
records, per chunk and per **slot** (a chosen decoder layer x an input group), a compact,
fixed-size form of each, accumulated in float32 whatever the model's dtype:

- `stat_moments`: the per-channel mean square over the chunk's tokens, averaged into
  MOMENT_BUCKETS contiguous channel buckets (a width-576 layer: ~4.5 channels a bucket; an
  outlier channel dominates its bucket, so it stays visible);
- `stat_sketch`: the sketched second-moment matrix P^T E[x x^T] P with a seeded Gaussian
  P (channels x SKETCH_RANK), its upper triangle (SKETCH_RANK*(SKETCH_RANK+1)/2 floats); additive
  over tokens, so a set's sketch is the token-weighted mean of its chunks';
- `stat_outliers`: the outlier channels, slot * 65536 + channel, at most MAX_OUTLIERS per slot,
  largest first. **Rule**: a channel is an outlier of a chunk when its RMS over the chunk's
  tokens exceeds OUTLIER_TAU = 6 times the median channel RMS of that layer input in that chunk
  (the "magnitude > 6x typical" criterion of LLM.int8()-style outlier studies).

Bound: 4 stat layers x 2 groups x (128 + 36) float32 + 8 x 16 int32 = 5,760 bytes per chunk at
most, whatever the model's width (SmolLM2-135M: the same; an 8B model: the same).

Slots: `stat_layers` decoder layers evenly spaced among the pooled ones (the forward pass stops
after the deepest pooled layer, so no extra layer runs), and per layer the input groups of its
Linear layers: inputs shared by several Linears (q/k/v: the attention input; gate/up: the MLP
input, both the output of a norm) first, then by forward order, at most GROUPS_PER_LAYER.
"""

from __future__ import annotations

import math

import numpy as np

MOMENT_BUCKETS = 128
SKETCH_RANK = 8
OUTLIER_TAU = 6.0
MAX_OUTLIERS = 16
GROUPS_PER_LAYER = 2
SLOT_STRIDE = 65536  # stat_outliers = slot * SLOT_STRIDE + channel


def stat_layer_ids(pooled: list[int], n: int) -> list[int]:
    """n decoder layers evenly spaced among the pooled ones (all of them when n >= their count)."""
    if n <= 0 or not pooled:
        return []
    if n >= len(pooled):
        return list(pooled)
    return [pooled[round(i * (len(pooled) - 1) / (n - 1))] for i in range(n)] if n > 1 else [pooled[-1]]


def sketch_matrix(width: int, seed: int = 0) -> np.ndarray:
    """P (width x SKETCH_RANK), N(0, 1/r): identical on every actor and machine."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, width, SKETCH_RANK, 7]))
    return (rng.standard_normal((width, SKETCH_RANK)) / math.sqrt(SKETCH_RANK)).astype(np.float32)


def bucket_ids(width: int) -> np.ndarray:
    """Contiguous channel buckets: channel c -> c * B // width (B = min(MOMENT_BUCKETS, width))."""
    buckets = min(MOMENT_BUCKETS, width)
    return (np.arange(width) * buckets) // width


def triu(r: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(r)


def unpack_sketch(flat: np.ndarray) -> np.ndarray:
    """[..., r(r+1)/2] upper triangles -> [..., r, r] symmetric matrices."""
    r = SKETCH_RANK
    iu = triu(r)
    out = np.zeros((*flat.shape[:-1], r, r), np.float64)
    out[..., iu[0], iu[1]] = flat
    out[..., iu[1], iu[0]] = flat
    return out


class InputStats:
    """Forward pre-hooks on the Linears of the stat layers; per forward pass, per chunk row:
    moments, sketch and outliers of each slot (torch, float32). Optional `hessians`: also
    accumulate the full E[x x^T] and E[x_c^2] of every Linear input group of those layers over
    all rows (what the layer-wise compression proxy needs; never stored per chunk)."""

    def __init__(self, blocks: list, layers: list[int], seed: int = 0, hessians: bool = False):
        import torch

        self.layers, self.seed, self.want_hessians = layers, seed, hessians
        self.mask = None
        self._seen: dict[int, tuple] = {}  # id(input) -> (input, group), one forward pass
        self._order: list[tuple[int, str]] = []  # (layer, first linear name) per group, first forward
        self._members: dict[tuple[int, str], list[str]] = {}
        self._widths: dict[tuple[int, str], int] = {}
        self._rows: dict[tuple[int, str], dict] = {}
        self.hessians: dict[tuple[int, str], "torch.Tensor"] = {}
        self.tokens = 0
        self._handles = []
        for layer in layers:
            for name, module in blocks[layer].named_modules():
                if isinstance(module, torch.nn.Linear):
                    self._handles.append(module.register_forward_pre_hook(self._hook(layer, name)))

    def _hook(self, layer: int, name: str):
        def hook(_module, inputs):
            x = inputs[0]
            # the same tensor object feeds q/k/v (and gate/up); holding it until the next
            # start() keeps its id from being reused by a later input of the same pass
            seen = self._seen.get(id(x))
            if seen is None or seen[0] is not x:
                seen = (x, (layer, name))
                self._seen[id(x)] = seen
                self._capture(seen[1], x)
            group = seen[1]
            if name not in self._members.setdefault(group, []):
                self._members[group].append(name)

        return hook

    def start(self, pool_mask) -> None:
        """Call before each forward pass: which positions are the chunks' own tokens."""
        self.mask = pool_mask
        self.tokens += int(pool_mask.sum())
        self._seen.clear()
        self._rows.clear()

    def _capture(self, group, x) -> None:
        import torch

        if group not in self._order:
            self._order.append(group)
            self._widths[group] = int(x.shape[-1])
        mask = self.mask.unsqueeze(-1).to(torch.float32)
        h = x.detach().to(torch.float32).nan_to_num(0.0) * mask  # padding never counts
        counts = mask.sum(1).clamp(min=1)  # [b, 1]
        self._rows[group] = {"x2": (h * h).sum(1) / counts, "h": h, "counts": counts}
        if self.want_hessians:
            flat = h.reshape(-1, h.shape[-1])
            acc = self.hessians.get(group)
            self.hessians[group] = flat.T @ flat if acc is None else acc + flat.T @ flat

    def members(self, group: tuple[int, str]) -> list[str]:
        """The Linears (names inside their decoder layer) that read this input group."""
        return list(self._members.get(group, [group[1]]))

    def slots(self) -> list[tuple[int, str]]:
        """The stored slots: per layer, groups shared by most Linears first, then forward order."""
        out = []
        for layer in self.layers:
            groups = [g for g in self._order if g[0] == layer]
            groups.sort(key=lambda g: (-len(self._members.get(g, [])), self._order.index(g)))
            out += groups[:GROUPS_PER_LAYER]
        return out

    def chunk_stats(self) -> dict[str, np.ndarray]:
        """Per row of the last forward: moments [b, S*B], sketch [b, S*T], outliers (list of arrays)."""
        import torch

        moments, sketches, outliers = [], [], []
        for s, group in enumerate(self.slots()):
            row = self._rows[group]
            x2, h, counts = row["x2"], row["h"], row["counts"]
            width = x2.shape[-1]
            ids = torch.from_numpy(bucket_ids(width)).to(x2.device)
            nb = int(ids.max()) + 1
            sums = torch.zeros((x2.shape[0], nb), device=x2.device).index_add_(1, ids, x2)
            moments.append(sums / torch.bincount(ids, minlength=nb).to(torch.float32))
            p = torch.from_numpy(sketch_matrix(width, self.seed)).to(h.device)
            y = h @ p  # [b, t, r]
            mat = torch.einsum("btr,bts->brs", y, y) / counts.unsqueeze(-1)
            iu = torch.triu_indices(SKETCH_RANK, SKETCH_RANK)
            sketches.append(mat[:, iu[0], iu[1]])
            rms = x2.clamp(min=0).sqrt()
            med = rms.median(-1, keepdim=True).values
            outliers.append((rms > OUTLIER_TAU * med.clamp(min=1e-12), rms, s))
        n = self.mask.shape[0]
        out_rows = []
        for r in range(n):
            ids: list[int] = []
            for flags, rms, s in outliers:
                chans = torch.nonzero(flags[r]).flatten()
                top = chans[torch.argsort(rms[r, chans], descending=True)][:MAX_OUTLIERS]
                ids += [s * SLOT_STRIDE + int(c) for c in top]
            out_rows.append(np.asarray(ids, np.int32))
        return {"stat_moments": torch.cat(moments, 1).cpu().numpy() if moments else np.zeros((n, 0), np.float32),
                "stat_sketch": torch.cat(sketches, 1).cpu().numpy() if sketches else np.zeros((n, 0), np.float32),
                "stat_outliers": out_rows}

    def layout(self) -> dict:
        """What the stored columns mean (kept in each shard's metadata)."""
        return {"slots": [{"layer": layer, "input_of": self._members.get((layer, name), [name]),
                           "width": self._widths.get((layer, name))} for layer, name in self.slots()],
                "moment_buckets": MOMENT_BUCKETS, "sketch_rank": SKETCH_RANK, "outlier_tau": OUTLIER_TAU,
                "max_outliers": MAX_OUTLIERS, "sketch_seed": self.seed}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
