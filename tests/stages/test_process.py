import pyarrow as pa

from cola_ray.stages import process


def test_split_points_prefer_paragraphs_then_lines():
    # 100 tokens, seq_len 40, paragraph starts at 30 and 70, lines every 10
    cuts = process.split_points(100, 40, paragraphs=[30, 70], lines=list(range(10, 100, 10)))
    assert cuts == [30, 70, 100]
    assert process.split_points(100, 40, paragraphs=[], lines=[]) == [40, 80, 100]
    assert process.split_points(25, 40, paragraphs=[10], lines=[]) == [25]


def test_chunker_splits_long_documents_at_paragraphs(tiny_llama):
    chunker = process.Chunker(str(tiny_llama), seq_len=48, min_tokens=4)
    paragraphs = [f"Paragraph {i} talks about topic {i} with several words in it." for i in range(12)]
    text = "\n\n".join(paragraphs)
    out = chunker(pa.table({"doc_id": ["d"], "source": ["s"], "text": [text]}))
    rows = out.to_pylist()
    assert len(rows) > 1
    assert all(r["num_tokens"] <= 48 for r in rows)
    for r in rows[:-1]:  # every chunk but the last ends at a paragraph break
        assert r["text"].rstrip(" ").endswith(("\n\n", "."))
    assert "".join(r["text"] for r in rows) == text


def test_short_empty_and_duplicate_chunks_are_counted(tiny_llama):
    chunker = process.Chunker(str(tiny_llama), seq_len=64, min_tokens=5)
    table = pa.table({"doc_id": ["a", "b", "c", "d"], "source": ["s"] * 4,
                      "text": ["a long enough sentence about the weather today", "hi", "",
                               "A  long enough sentence about the WEATHER today"]})
    out = chunker(table)
    assert out.column("drop").to_pylist() == ["", "below_min_tokens", "empty", ""]
    keys = out.column("dedup_key").to_pylist()
    assert keys[0] == keys[3]  # the pool keeps the smaller id of the two (tests/pool/test_pool.py)


def test_packing_fills_sequences_with_eos_between_documents(tiny_llama):
    chunker = process.Chunker(str(tiny_llama), seq_len=64, min_tokens=8, pack=True)
    eos = chunker.tokenizer.eos_token_id
    texts = [f"Note {i}: the tide came in early." for i in range(9)]
    batch = pa.table({"doc_id": [f"d{i}" for i in range(9)] + ["x0"], "source": ["s"] * 9 + ["other"],
                      "text": texts + [texts[0]]})
    rows = chunker(batch).to_pylist()
    packed = [r for r in rows if r["source"] == "s"]
    lengths = [len(chunker.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert len(packed) < 9 and all(r["num_tokens"] <= 64 for r in packed)
    assert sum(r["num_tokens"] for r in packed) == sum(lengths) + 9 - len(packed)  # one EOS per join
    first = packed[0]
    members = first["doc_id"].split(" ")
    assert len(members) > 1 and first["id"] == "d0#0"
    assert first["input_ids"].count(eos) == len(members) - 1
    assert first["text"].split(chunker.tokenizer.eos_token) == texts[:len(members)]
    # every document appears in exactly one sequence, in order; sources are never mixed
    assert [d for r in packed for d in r["doc_id"].split(" ")] == [f"d{i}" for i in range(9)]
    assert [r["doc_id"] for r in rows if r["source"] == "other"] == ["x0"]
    assert chunker(batch).equals(chunker(batch))  # deterministic


def test_quality_filters_and_near_duplicate_verdicts_drop_whole_documents(tiny_llama):
    from cola_ray.stages.filters import FilterConfig

    chunker = process.Chunker(str(tiny_llama), seq_len=64, min_tokens=4, quality=FilterConfig(min_chars=20))
    good = "A long enough sentence about the weather in the valley this morning."
    table = pa.table({"doc_id": ["a", "b", "c", "d"], "source": ["s"] * 4,
                      "text": [good, "spam spam spam spam " * 20, "tiny", good + " Again."]})
    rows = chunker(table, near_dups={"d": "near_duplicate"}).to_pylist()
    assert [(r["doc_id"], r["drop"]) for r in rows] == [
        ("a", ""), ("b", "repetitive"), ("c", "too_short"), ("d", "near_duplicate")]
    assert all(r["num_tokens"] == 0 and r["input_ids"] == [] for r in rows[1:])
    unfiltered = process.Chunker(str(tiny_llama), 64, 4)(table)
    assert set(unfiltered.column("drop").to_pylist()) <= {"", "below_min_tokens"}  # no filters, no verdicts
    survivors = process.surviving_documents(table, FilterConfig(min_chars=20))
    assert survivors.column("doc_id").to_pylist() == ["a", "d"]
    assert survivors.column("key").to_pylist()[0] == process.dedup_key(good)
