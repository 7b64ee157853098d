"""`hf://datasets/...` corpora (stages/hub.py): the URI grammar, and a local dataset repository
mirror resolved by `datasets` itself (configs and splits from its README), offline."""

import json

import pytest

from cola_ray.errors import UserError
from cola_ray.stages import hub, ingest

README = """---
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path: data/train-*.jsonl
  - split: test
    path: data/test-*.jsonl
- config_name: extra
  data_files:
  - split: validation
    path: extra/*.jsonl
  - split: other
    path: other/*.jsonl
---
# a dataset
"""


def make_repo(root, texts: dict[str, list[str]]):
    """root/org/news: README with two configs; files as `texts` says (relative path -> texts)."""
    repo = root / "org" / "news"
    for rel, docs in texts.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    (repo / "README.md").write_text(README)
    return repo


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    make_repo(tmp_path, {"data/train-00000.jsonl": ["a"], "data/train-00001.jsonl": ["b"],
                         "data/test-00000.jsonl": ["c"], "extra/v.jsonl": ["d"], "other/o.jsonl": ["e"]})
    monkeypatch.setenv(hub.MIRROR_ENV, str(tmp_path))
    return tmp_path / "org" / "news"


def test_the_uri_grammar():
    d = hub.parse("hf://datasets/HuggingFaceH4/ultrachat_200k@main/default:train_sft")
    assert (d.org, d.name, d.revision, d.config, d.split) == ("HuggingFaceH4", "ultrachat_200k", "main", "default",
                                                              "train_sft")
    assert d.label == "ultrachat_200k-default-train_sft" and hub.parse("hf://datasets/a/b").label == "b"
    for bad in ("hf://models/a/b", "hf://datasets/onlyname", "hf://datasets/a/b/c/d", "hf://datasets/a/b:", "hf://x"):
        with pytest.raises(UserError, match=r"not a Hugging Face dataset URI \(expected hf://datasets/ORG/NAME"):
            hub.parse(bad)


def test_a_mirror_resolves_configs_and_splits_like_load_dataset(mirror):
    label, files = hub.data_files("hf://datasets/org/news")  # the default config, its train split
    assert label == "news" and sorted(f.rsplit("/", 1)[-1] for f in files) == ["train-00000.jsonl", "train-00001.jsonl"]
    assert [f.rsplit("/", 1)[-1] for f in hub.data_files("hf://datasets/org/news:test")[1]] == ["test-00000.jsonl"]
    label, files = hub.data_files("hf://datasets/org/news/extra:validation")
    assert label == "news-extra-validation" and files[0].endswith("extra/v.jsonl")
    found = ingest.discover(["hf://datasets/org/news:test"])
    assert [(f.source, f.kind) for f in found] == [("news-test", "jsonl")]


@pytest.mark.parametrize("uri, message", [
    ("hf://datasets/org/news:nope", "no split 'nope' (splits: test, train)"),
    ("hf://datasets/org/news/extra", "several splits and none named (splits: other, validation)"),
    ("hf://datasets/org/news/nope", "BuilderConfig 'nope' not found"),
    ("hf://datasets/org/missing", "not in the mirror"),
    ("hf://datasets/org/news@v2", "not in the mirror"),
])
def test_bad_references_are_one_line(mirror, uri, message):
    with pytest.raises(UserError, match="^--probes code=" + uri.replace("/", "/") + ": ") as e:
        ingest.discover([uri], flag="--probes code=")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_unreachable_hub_is_one_line(monkeypatch):
    import datasets

    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # what a machine without network meets
    with pytest.raises(UserError, match=r"^--corpus hf://datasets/org/news: cannot load it from the Hugging Face hub "
                                        r"\(ConnectionError: .*\); offline, set COLA_RAY_HF_MIRROR"):
        hub.data_files("hf://datasets/org/news")
