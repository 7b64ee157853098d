"""Routed-token counts per expert in the activation pass, on tiny random MoE models of two
architectures built locally (issue 13)."""

import numpy as np
import pytest

from cola_ray.stages.activations import ActivationExtractor
from cola_ray.stages.experts import ExpertCounter, config_experts
from tests import tinymodels

TOKENS = [[5, 6, 7, 8, 9], [10, 11, 12], [20 + i for i in range(40)]]


@pytest.fixture(scope="module", params=["mixtral", "qwen2_moe"])
def moe(request, tmp_path_factory, tiny_tokenizer_dir):
    out = tinymodels.build_model(tmp_path_factory.mktemp(request.param), request.param, tiny_tokenizer_dir)
    ex = ActivationExtractor(model=str(out), layers="0", proj_dim=8, seed=0, device="cpu", dtype="float32",
                             micro_batch_size=4, shard_dir=str(tmp_path_factory.mktemp("shards")), batch_size=8)
    ex.setup()
    return request.param, ex


def test_moe_layers_are_found_structurally(moe):
    arch, ex = moe
    layout = ex.experts.layout()
    # qwen2_moe's first layer is dense (mlp_only_layers=[0]): only the routed layers count
    assert layout == ({"layers": [0, 1, 2], "experts": [8] * 3, "top_k": 2} if arch == "mixtral"
                      else {"layers": [1, 2], "experts": [16, 16], "top_k": 4})
    assert "expert_tokens" in ex.columns


def test_every_real_token_is_counted_top_k_times_per_layer_and_padding_never(moe):
    """--layers 0 stops the pooling early, but the pass runs on to the last MoE layer so that
    every layer's routing is counted; a chunk's counts do not depend on its batch-mates."""
    _, ex = moe
    layout = ex.experts.layout()
    _, batched = ex.embed_sorted(TOKENS)
    alone = [ex.embed([t])[1]["expert_tokens"][0] for t in TOKENS]
    bos = 1 if ex.bos is not None else 0
    for t, counts, single in zip(TOKENS, batched["expert_tokens"], alone):
        per_layer = np.asarray(counts).reshape(len(layout["layers"]), -1)
        assert (per_layer.sum(1) == (len(t) + bos) * layout["top_k"]).all()
        np.testing.assert_array_equal(counts, single)


def test_counts_match_the_routing_the_model_reports(moe):
    """Independent check: top-k of the router logits the model itself returns
    (output_router_logits) gives the same per-expert counts."""
    import torch

    from cola_ray.models import load_causal_lm

    _, ex = moe
    layout = ex.experts.layout()
    ids = torch.tensor([TOKENS[2]])
    with torch.inference_mode():  # a fresh copy: the extractor's model stops its forward early
        logits = load_causal_lm(ex.model)(input_ids=ids, output_router_logits=True).router_logits
    logits = [lg for lg in logits if lg is not None]
    assert len(logits) == len(layout["layers"])
    k, n = layout["top_k"], layout["experts"][0]
    want = np.concatenate([np.bincount(torch.topk(lg, k, dim=-1).indices.reshape(-1).numpy(), minlength=n)
                           for lg in logits])
    got = np.asarray(ex.embed([TOKENS[2]])[1]["expert_tokens"][0])
    np.testing.assert_array_equal(got, want)


def test_a_dense_model_has_no_experts(tiny_llama):
    from transformers import AutoConfig

    from cola_ray.models import find_decoder_layers, load_causal_lm

    assert not ExpertCounter(find_decoder_layers(load_causal_lm(str(tiny_llama))))
    assert config_experts(AutoConfig.from_pretrained(tiny_llama)) is None
