"""Stage-2 options parse into what the stages need; the near-dup pass on Ray Data finds the same
copies as the in-memory reference, and says which are exact."""

import pyarrow as pa
import pytest

from cola_ray.config import CurateConfig
from cola_ray.errors import UserError
from cola_ray.stages.filters import FilterConfig
from cola_ray.workflows import processing
from tests.conftest import news_texts
from tests.stages.neardup_reference import NearDedup


def _options(cfg: CurateConfig, labels: list[str]) -> processing.Processing:
    return processing.processing_options(cfg.processing_args(), cfg.model, cfg.text_field, labels)


def test_filter_options():
    assert processing.parse_filters([]) == FilterConfig()
    assert processing.parse_filters(["min_chars=50,max_digit_ratio=0.5", "top-ngram-size=4"]) == FilterConfig(
        min_chars=50, max_digit_ratio=0.5, top_ngram_size=4)
    assert processing.parse_filters(["off"]) is None
    assert processing.parse_filters(["False"]) is None  # YAML's reading of a bare `off`
    with pytest.raises(UserError, match="NAME one of min_chars"):
        processing.parse_filters(["min_words=3"])
    with pytest.raises(UserError, match="not a number"):
        processing.parse_filters(["min_chars=many"])
    with pytest.raises(UserError, match=r"must be in \[0, 1\]"):
        processing.parse_filters(["max_symbol_ratio=2"])


def test_qa_options():
    cfg = CurateConfig(qa_fields=["mathqa=question:Problem,reasoning:Rationale", "mathqa=answer:correct"],
                       qa_template="Q: {question}\\nA: {answer}")
    proc = _options(cfg, ["mathqa", "news"])
    assert proc.formatters["mathqa"].fields == {"question": "Problem", "reasoning": "Rationale", "answer": "correct"}
    assert proc.formatters["news"].template == "Q: {question}\nA: {answer}"
    assert proc.qa_first == {"mathqa"}  # a mapped source renders as Q&A even with a text field
    assert _options(CurateConfig(qa_format=True), ["a", "b"]).qa_first == {"a", "b"}
    with pytest.raises(UserError, match="no source or probe set 'wiki'"):
        _options(CurateConfig(qa_fields=["wiki=question:q"]), ["news"])
    with pytest.raises(UserError, match="SOURCE=ROLE:FIELD"):
        processing.parse_qa_fields(["mathqa=question"])


def test_near_duplicate_pass_on_ray_matches_in_memory(ray_session, tmp_path):
    import ray

    words = " ".join(news_texts()).split()
    texts = {f"s:{k:02d}": " ".join(words[k * 150:(k + 1) * 150]) for k in range(12)}
    edited = texts["s:03"].split()
    edited[70] = "zebra"
    texts["s:50"] = " ".join(edited)  # near copy of s:03
    texts["s:60"] = "  " + texts["s:05"].upper()  # exact copy up to case and spaces
    texts["s:70"] = "tiny"  # fails the quality filter, so it takes no part
    ids = sorted(texts)
    docs = ray.data.from_arrow(pa.table({"doc_id": ids, "source": ["s"] * len(ids), "text": [texts[i] for i in ids]}))
    proc = processing.Processing(FilterConfig(), 0.8, False)
    found, documents = processing.find_near_duplicates(docs.repartition(3), proc, str(tmp_path / "signatures"))
    assert documents == len(ids)  # every document read, the filtered one ("tiny") included
    assert found == {"s:50": "near_duplicate", "s:60": "duplicate"}
    in_memory = NearDedup(0.8).duplicates([(i, texts[i]) for i in ids if i != "s:70"])
    assert set(found) == in_memory
    assert not (tmp_path / "signatures").exists()  # the pass's signature files are removed


def test_water_fill_keeps_small_sources_whole_and_samples_the_dominant_one():
    assert processing.water_fill({"crawl": 10_000, "code": 30, "docs": 200}, 600) == {
        "code": 30.0, "crawl": 370.0, "docs": 200.0}
    assert processing.water_fill({"a": 10, "b": 10}, 100) == {"a": 10.0, "b": 10.0}  # a budget above the corpus
    assert sum(processing.water_fill({"a": 7, "b": 900, "c": 55}, 300).values()) == pytest.approx(300)
