import numpy as np
import pytest
import torch

from cola_ray.stages.activations import ActivationExtractor, projection_matrix
from tests import tinymodels


def _extractor(model_dir, tmp_path, layers="all", batch_size=4, device="cpu", dtype="float32"):
    ex = ActivationExtractor(model=str(model_dir), layers=layers, proj_dim=16, seed=0, device=device,
                             dtype=dtype, micro_batch_size=batch_size, shard_dir=str(tmp_path / device / "shards"))
    ex.setup()
    return ex


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_tokenizer_dir):
    return tinymodels.build_model(tmp_path_factory.mktemp("gpt2"), "gpt2", tiny_tokenizer_dir)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_pooled_vector_unchanged_by_padding(request, tmp_path, tiny_llama, gpt2_dir, arch, side):
    ex = _extractor(tiny_llama if arch == "llama" else gpt2_dir, tmp_path)
    short = list(range(10, 25))
    batch = [list(range(30, 90)), short, list(range(100, 140))]
    alone, alone_stats = ex.embed([short])
    padded, padded_stats = ex.embed(batch, side=side)
    np.testing.assert_allclose(padded[1], alone[0], rtol=1e-4, atol=1e-5)
    for name in ("stat_moments", "stat_sketch"):  # the layer-input statistics ignore padding too
        np.testing.assert_allclose(padded_stats[name][1], alone_stats[name][0], rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(padded_stats["stat_outliers"][1], alone_stats["stat_outliers"][0])


def test_projection_is_seeded_and_identical_everywhere():
    a, b = projection_matrix(256, 16, 7), projection_matrix(256, 16, 7)
    assert a.dtype == np.float32 and a.shape == (256, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, projection_matrix(256, 16, 8))


def test_forward_stops_after_deepest_chosen_layer(tmp_path, tiny_llama):
    ex = _extractor(tiny_llama, tmp_path, layers="0,1")
    ran = []
    from cola_ray.models import find_decoder_layers

    blocks = find_decoder_layers(ex.lm)
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_a, i=i: ran.append(i))  # runs before ours raises
    ex.lm.lm_head.register_forward_pre_hook(lambda *_a: ran.append("lm_head"))
    ex.embed([list(range(5, 20))])
    assert ran == [0, 1]


def test_non_finite_chunks_are_dropped_and_counted(tmp_path, tiny_llama):
    import pyarrow as pa

    ex = _extractor(tiny_llama, tmp_path)
    with torch.no_grad():
        ex.lm.get_input_embeddings().weight[99] = float("inf")
    batch = pa.table({
        "id": ["a#0", "b#0", "c#0"], "doc_id": ["a", "b", "c"], "source": ["s"] * 3,
        "text": ["x", "y", ""], "input_ids": [[5, 6, 7, 8], [5, 99, 7], []],
        "num_tokens": [4, 3, 0], "drop": ["", "", "below_min_tokens"],
    }, schema=pa.schema([("id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()),
                         ("text", pa.string()), ("input_ids", pa.list_(pa.int32())),
                         ("num_tokens", pa.int32()), ("drop", pa.string())]))
    ledger = ex.process(batch)
    assert ledger.column("drop").to_pylist() == ["", "non_finite", "below_min_tokens"]
    shard = __import__("pyarrow.parquet", fromlist=["x"]).read_table(next((tmp_path / "cpu" / "shards").glob("*.parquet")))
    vectors = shard.column("vector").to_pylist()
    assert vectors[0] is not None and np.isfinite(vectors[0]).all()
    assert vectors[1] is None and vectors[2] is None


@pytest.mark.gpu
def test_cuda_bfloat16_pass_matches_the_cpu_float32_one(tmp_path, tiny_llama):
    """The CUDA actor path in bf16 (curate's default on a GPU): vectors and layer statistics come
    back float32 and finite, and close to the CPU float32 pass over the same chunks (bf16 keeps
    ~3 significant digits, so cosine >= 0.99 and statistics within a few percent, not equal)."""
    batch = [list(range(30, 90)), list(range(10, 25)), list(range(100, 140))]
    cpu_vectors, cpu_stats = _extractor(tiny_llama, tmp_path).embed(batch)
    gpu = _extractor(tiny_llama, tmp_path, device="cuda", dtype="bfloat16")
    assert next(gpu.lm.parameters()).dtype == torch.bfloat16 and next(gpu.lm.parameters()).is_cuda
    vectors, stats = gpu.embed(batch)
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
    cosine = (vectors * cpu_vectors).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(cpu_vectors, axis=1)
    assert cosine.min() >= 0.99, cosine
    for name in ("stat_moments", "stat_sketch"):
        got, want = np.asarray(stats[name], dtype=np.float64), np.asarray(cpu_stats[name], dtype=np.float64)
        assert np.asarray(stats[name]).dtype == np.float32 and np.isfinite(got).all()
        assert np.abs(got - want).sum() <= 0.05 * np.abs(want).sum(), name
