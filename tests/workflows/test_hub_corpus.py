"""`cola-ray curate --corpus hf://datasets/ORG/NAME:split` end to end, from a local dataset
repository mirror (offline), with probes named the same way."""

import json

from cola_ray.cli import main
from cola_ray.stages import hub
from tests.conftest import news_texts
from tests.stages.test_hub import make_repo


def test_curate_reads_one_split_of_a_dataset_by_name(ray_session, tiny_llama, tmp_path, monkeypatch, capsys):
    news = news_texts()
    make_repo(tmp_path / "mirror", {"data/train-00000.jsonl": news[:12], "data/train-00001.jsonl": news[12:20],
                                    "data/test-00000.jsonl": news[100:105], "extra/v.jsonl": news[110:120]})
    monkeypatch.setenv(hub.MIRROR_ENV, str(tmp_path / "mirror"))
    out = tmp_path / "out"
    assert main(["curate", "--model", str(tiny_llama), "--corpus", "hf://datasets/org/news:train", "--out", str(out),
                 "--seq-len", "64", "--min-tokens", "8", "--num-samples", "4", "--proj-dim", "8", "--selector", "random",
                 "--capabilities", "general", "--probes", "general=hf://datasets/org/news/extra:validation"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["counts"]["per_source"]) == ["news-train"]
    assert m["counts"]["per_source"]["news-train"]["documents"] == 20  # the train split only: 12 + 8
    rows = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["source"] for r in rows} == {"news-train"}
    assert "news-train" in capsys.readouterr().out
