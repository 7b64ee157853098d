"""Shared real parts for the whole suite: one Ray session, one loopback S3 server, tiny models."""

from __future__ import annotations

import json
import logging
import os
import socket
import sysconfig
from pathlib import Path

import pytest

from tests import tinymodels

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-operator stat dumps drown failures


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests skip where no CUDA device is visible (`pytest -m gpu` runs them on a
    GPU machine; `make test` leaves them out with -m "not gpu")."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server on loopback. `.ci/run` starts one and exports AWS_ENDPOINT_URL;
    without it (plain `pytest`) the suite starts moto's threaded server itself."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        yield os.environ["AWS_ENDPOINT_URL"]
        return
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture()
def flaky_s3(s3_endpoint, s3_bucket, monkeypatch):
    """The S3 server behind tests/s3proxy.FlakyProxy, for this process only (Ray's workers still
    talk to the server directly): set `fail_first` (and `path_part`, `methods`) to inject errors."""
    import threading
    from http.server import ThreadingHTTPServer

    from tests.s3proxy import FlakyProxy

    FlakyProxy.reset(s3_endpoint)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield FlakyProxy
    server.shutdown()


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """One local Ray session for the whole suite (started after the S3 env is set, so that
    Ray's workers inherit AWS_ENDPOINT_URL)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"AWS_ENDPOINT_URL": s3_endpoint, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint):
    import boto3

    name = "cola-test"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return name


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    tinymodels.build_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """Path to a saved tiny random-weight LlamaForCausalLM (4 layers, hidden 128) + tokenizer."""
    return tinymodels.build_model(tmp_path_factory.mktemp("llama"), "llama", tiny_tokenizer_dir)


def _write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({field: t}) + "\n")
    return path


def write_damaged_parquet(path: Path, texts: list[str], groups: int = 3, bad_group: int = 1) -> Path:
    """A parquet file of `texts` in `groups` row groups whose footer is whole but whose row group
    `bad_group` is overwritten with noise (a bad sector, a copy patched up): it passes the
    schema check and fails partway through the reading."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path, row_group_size=-(-len(texts) // groups))
    chunk = pq.read_metadata(path).row_group(bad_group).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 8: start + chunk.total_compressed_size - 4] = np.random.default_rng(0).integers(
        0, 256, chunk.total_compressed_size - 12, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def news_texts() -> list[str]:
    """Real news prose shipped as test data in the gensim wheel (read, never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    base = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
    with open(base / "lee_background.cor", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def code_texts(n: int = 60) -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(lib.glob("*.py"))[-n:]  # the last n modules; tinymodels trains on the first 120
    return [p.read_text(encoding="utf-8", errors="replace")[:3000] for p in files]


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A folder with two real sources: news.jsonl (prose) and code.jsonl (Python source)."""
    root = tmp_path_factory.mktemp("corpus")
    _write_jsonl(root / "news.jsonl", news_texts()[:80])
    _write_jsonl(root / "code.jsonl", code_texts(40))
    return root
