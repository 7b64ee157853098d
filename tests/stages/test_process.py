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
    assert out.column("drop").to_pylist() == ["", "too_short", "empty", ""]
    keys = out.column("dedup_key").to_pylist()
    assert keys[0] == keys[3]
    group = out.filter(pa.array([True, False, False, True]))
    for order in (group, group.take([1, 0])):
        marked = process.mark_duplicates(order).sort_by("id").to_pylist()
        assert [m["drop"] for m in marked] == ["", "duplicate"]  # the smallest id survives
        assert marked[1]["input_ids"] == []
