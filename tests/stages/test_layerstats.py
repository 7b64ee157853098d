import numpy as np
import torch

from cola_ray.models import find_decoder_layers
from cola_ray.stages import layerstats
from cola_ray.stages.activations import ActivationExtractor


def _extractor(model_dir, tmp_path, stat_layers=2):
    ex = ActivationExtractor(model=str(model_dir), layers="all", proj_dim=16, seed=0, device="cpu", dtype="float32",
                             micro_batch_size=4, shard_dir=str(tmp_path / "shards"), stat_layers=stat_layers)
    ex.setup()
    return ex


def test_stat_layers_are_evenly_spaced_among_the_pooled_ones():
    assert layerstats.stat_layer_ids(list(range(30)), 4) == [0, 10, 19, 29]
    assert layerstats.stat_layer_ids([0, 1], 4) == [0, 1]
    assert layerstats.stat_layer_ids([3, 5, 9], 1) == [9]
    assert layerstats.stat_layer_ids([3, 5, 9], 0) == []


def test_stats_match_a_direct_computation_on_the_attention_input(tmp_path, tiny_llama):
    ex = _extractor(tiny_llama, tmp_path)
    layer = ex.stats.layers[0]
    seen = []
    q = find_decoder_layers(ex.lm)[layer].self_attn.q_proj
    q.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    tokens = list(range(10, 40))
    _, stats = ex.embed([tokens])
    layout = ex.stats.layout()
    assert layout["slots"][0] == {"layer": layer, "width": 128, "input_of": ["self_attn.q_proj", "self_attn.k_proj",
                                                               "self_attn.v_proj"]}
    assert layout["slots"][1]["input_of"] == ["mlp.gate_proj", "mlp.up_proj"]  # shared inputs first
    x = seen[0][0, int(ex.bos is not None):].double().numpy()  # the chunk's own tokens: a BOS is fed, not counted
    m = (x ** 2).mean(0)
    ids = layerstats.bucket_ids(x.shape[1])
    buckets = np.array([m[ids == b].mean() for b in range(ids.max() + 1)])
    np.testing.assert_allclose(stats["stat_moments"][0][: len(buckets)], buckets, rtol=1e-4)
    p = layerstats.sketch_matrix(x.shape[1], 0).astype(np.float64)
    sketch = (x @ p).T @ (x @ p) / len(x)
    r = layerstats.SKETCH_RANK
    np.testing.assert_allclose(stats["stat_sketch"][0][: r * (r + 1) // 2], sketch[np.triu_indices(r)], rtol=1e-3,
                               atol=1e-6)
    per_chunk = 2 * 2 * (layerstats.MOMENT_BUCKETS + r * (r + 1) // 2) * 4 + 4 * layerstats.MAX_OUTLIERS * 4
    assert stats["stat_moments"][0].nbytes + stats["stat_sketch"][0].nbytes + stats["stat_outliers"][0].nbytes <= per_chunk


def test_a_planted_outlier_channel_is_named(tmp_path, tiny_llama):
    ex = _extractor(tiny_llama, tmp_path)
    layer = ex.stats.layers[0]
    with torch.no_grad():  # channel 7 of the attention input of the first stat layer: 50x the others
        find_decoder_layers(ex.lm)[layer].input_layernorm.weight[7] *= 50
    _, stats = ex.embed([list(range(10, 40)), list(range(50, 90))])
    for row in stats["stat_outliers"]:
        slots, channels = row // layerstats.SLOT_STRIDE, row % layerstats.SLOT_STRIDE
        assert 7 in channels[slots == 0].tolist()
        assert len(row) <= layerstats.MAX_OUTLIERS * len(ex.stats.slots())
