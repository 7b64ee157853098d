"""A small two-source corpus and a reference curate run shared by the workflow tests."""

import pytest

from cola_ray.config import CurateConfig
from tests.conftest import _write_jsonl, code_texts, news_texts


@pytest.fixture(scope="session")
def ft_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-corpus")
    _write_jsonl(root / "news.jsonl", news_texts()[40:64])
    _write_jsonl(root / "code.jsonl", [t[:1200] for t in code_texts(10)])
    return root


def ft_config(model, corpus, out, **kw) -> CurateConfig:
    base = dict(model=str(model), corpus=[str(corpus / "news.jsonl"), str(corpus / "code.jsonl")], out=str(out),
                num_samples=6, seq_len=64, min_tokens=8, proj_dim=16, kmeans_iters=10, kmeans_restarts=2,
                shard_size=16, batch_size=8)
    base.update(kw)
    return CurateConfig(**base)


@pytest.fixture(scope="session")
def ft_reference_out(ray_session, tiny_llama, ft_corpus, tmp_path_factory):
    """The output folder of an undisturbed run (its pool included): never write into it."""
    from cola_ray.workflows.curate import run_curate

    out = tmp_path_factory.mktemp("ft-ref") / "out"
    run_curate(ft_config(tiny_llama, ft_corpus, out))
    return out


@pytest.fixture(scope="session")
def ft_reference(ft_reference_out):
    """calibration.jsonl of an undisturbed run."""
    return (ft_reference_out / "calibration.jsonl").read_text()
