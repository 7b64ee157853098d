import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cola_ray.errors import UserError
from cola_ray.stages import ingest


def _docs(n, prefix):
    return [f"{prefix} document number {i} with some text." for i in range(n)]


@pytest.fixture()
def many_formats(tmp_path):
    root = tmp_path / "formats"
    root.mkdir()
    (root / "a.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in _docs(3, "jsonl")) + "\n")
    with gzip.open(root / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps({"body": t}) for t in _docs(2, "gz")) + "\n")
    pq.write_table(pa.table({"body": _docs(4, "parquet")}), root / "c.parquet")
    return root


def test_source_labels():
    assert ingest.source_label("data/news.jsonl") == "news"
    assert ingest.source_label("s3://bucket/corpora/wiki/") == "wiki"
    assert ingest.source_label("data/code/*.parquet") == "code"
    assert ingest.source_label("x/y.jsonl.gz") == "y"


def test_reads_every_format_with_source_and_stable_ids(ray_session, many_formats, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("first line of notes\nsecond line of notes\n")
    import datasets

    datasets.Dataset.from_dict({"body": _docs(5, "hf")}).save_to_disk(str(tmp_path / "hfset"))
    files = ingest.discover([str(many_formats), str(txt), str(tmp_path / "hfset")])
    ingest.validate([f for f in files if f.kind != "text"], "body")
    rows = ingest.read_documents(files, "body").take_all()
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    assert {k: len(v) for k, v in by_source.items()} == {"formats": 9, "notes": 2, "hfset": 5}
    again = ingest.read_documents(files, "body").take_all()
    assert sorted(r["doc_id"] for r in rows) == sorted(r["doc_id"] for r in again)
    assert all(r["doc_id"].startswith(r["source"] + ":") for r in rows)


def test_first_docs_is_per_source(ray_session, many_formats, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps({"body": t}) for t in _docs(6, "other")) + "\n")
    files = ingest.discover([str(many_formats), str(other)])
    rows = ingest.read_documents(files, "body", first_docs=2).take_all()
    assert sorted(r["source"] for r in rows) == ["formats", "formats", "other", "other"]


def test_candidate_budget_is_a_per_source_hash_sample_decided_before_tokenization(ray_session, tmp_path):
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    big.write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(400, "big")))
    small.write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(5, "small")))
    files = ingest.discover([str(big), str(small)])
    assert ingest.count_documents(files) == {"big": 400, "small": 5}
    rows = ingest.read_documents(files, "text", fractions={"big": 0.25, "small": 1.0}).take_all()
    kept = sorted(r["doc_id"] for r in rows if r["source"] == "big")
    assert 70 <= len(kept) <= 130 and sum(r["source"] == "small" for r in rows) == 5  # ~100 of 400
    everything = [r["doc_id"] for r in ingest.read_documents(files, "text").take_all() if r["source"] == "big"]
    assert kept == sorted(i for i, keep in zip(everything, ingest.in_budget(everything, 0.25)) if keep)


def test_bad_corpora_name_the_culprit(tmp_path):
    with pytest.raises(UserError, match="matches no readable files"):
        ingest.discover([str(tmp_path / "nothing-*.jsonl")])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match=r"bad\.parquet: unreadable or corrupt"):
        ingest.validate(ingest.discover([str(bad)]), "text")
    gz = tmp_path / "broken.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match=r"broken\.jsonl\.gz: unreadable or corrupt"):
        ingest.validate(ingest.discover([str(gz)]), "text")
    ok = tmp_path / "fields.jsonl"
    ok.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(UserError, match=r"fields\.jsonl: no field 'text'"):
        ingest.validate(ingest.discover([str(ok)]), "text")


def test_a_first_record_longer_than_the_validation_head_is_read_whole(ray_session, tmp_path):
    """A book or a code file on one JSON line (here 3 MB, beyond the 1 MB head validation used to
    cut it at) is a document like any other, not a 'corrupt jsonl file'."""
    f = tmp_path / "books.jsonl"
    f.write_text(json.dumps({"text": "word " * 600_000}) + "\n" + json.dumps({"text": "a short one"}) + "\n")
    files = ingest.discover([str(f)])
    ingest.validate(files, "text")
    assert sorted(len(r["text"]) for r in ingest.read_documents(files, "text").take_all()) == [11, 3_000_000]


def test_json_lines_are_parsed_record_by_record(ray_session, tmp_path):
    """One record whose text is a number, a list or an object must not fail the file (pyarrow's
    reader infers one type per column and did): those become documents marked invalid
    (not_string, dropped by stage 2), a missing or null text an empty one. A BOM, CRLF line
    ends, blank lines, a lone surrogate escape, a raw tab inside a string and a latin-1 byte
    (replaced by U+FFFD, for the broken_encoding filter) are all read."""
    f = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"text": "plain one"}), json.dumps({"text": 12345}), "",
             json.dumps({"text": ["a", "b"]}), json.dumps({"text": {"x": 1}}), json.dumps({"other": 1}),
             json.dumps({"text": None}), '{"text": "lone \\ud800 surrogate"}', '{"text": "raw\ttab"}']
    f.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n" + b'{"text": "caf\xe9 latin-1"}\n')
    files = ingest.discover([str(f)])
    ingest.validate(files, "text")
    rows = ingest.read_documents(files, "text").take_all()
    texts = sorted((r["text"] is None, r["text"] or "") for r in rows)
    assert texts == [(False, ""), (False, ""), (False, ""), (False, ""), (False, ""), (False, "caf\ufffd latin-1"),
                     (False, "lone ? surrogate"), (False, "plain one"), (False, "raw\ttab")]
    bad = [r for r in rows if r["invalid"]]
    assert [r["invalid"] for r in bad] == ["not_string"] * 3 and len({r["doc_id"] for r in bad}) == 3


def test_json_lines_errors_name_the_file_and_line(ray_session, tmp_path):
    f = tmp_path / "cut.jsonl"
    f.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "also fine"}) + "\n" + '{"text": "trunc')
    with pytest.raises(Exception) as err:
        ingest.read_documents(ingest.discover([str(f)]), "text").take_all()
    from cola_ray.cli import find_user_error

    assert "cut.jsonl: line 3 is not a JSON record" in str(find_user_error(err.value))
    g = tmp_path / "array.jsonl"
    g.write_text(json.dumps({"text": "fine"}) + "\n[1, 2]\n")
    with pytest.raises(Exception) as err:
        ingest.read_documents(ingest.discover([str(g)]), "text").take_all()
    assert "array.jsonl: line 2 is a JSON list, not an object" in str(find_user_error(err.value))
    gz = tmp_path / "half.jsonl.gz"
    payload = gzip.compress("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(2000)).encode())
    gz.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(Exception) as err:
        ingest.read_documents(ingest.discover([str(gz)]), "text").take_all()
    assert "half.jsonl.gz: unreadable or corrupt jsonl file after line" in str(find_user_error(err.value))


def test_a_parquet_row_group_damaged_partway_is_named_or_skipped(ray_session, tmp_path):
    from cola_ray import storage
    from cola_ray.cli import find_user_error
    from tests.conftest import write_damaged_parquet

    f = write_damaged_parquet(tmp_path / "crawl.parquet", [f"document {i} " * 20 for i in range(30)])
    files = ingest.discover([str(f)])
    ingest.validate(files, "text")  # the footer is whole: the damage shows only when reading
    assert ingest.count_documents(files) == {"crawl": 30}  # from the footer
    with pytest.raises(Exception) as err:
        ingest.read_documents(files, "text").take_all()
    message = str(find_user_error(err.value))
    assert "crawl.parquet: unreadable or corrupt parquet file at row group 1 of 3 (after record 10)" in message
    skip_to = str(tmp_path / "skipped")
    rows = ingest.read_documents(files, "text", skip_to=skip_to).take_all()
    assert sorted(r["text"] for r in rows) == sorted(f"document {i} " * 20 for i in range(10))
    (note,) = ingest.skipped_files(skip_to)
    assert note["file"] == storage.to_uri(str(f), str(f)) and note["records_kept"] == 10
    assert "row group 1 of 3" in note["error"]


def test_json_files_of_lines_and_arrays_both_read(ray_session, tmp_path):
    lines, array = tmp_path / "lines.json", tmp_path / "array.json"
    lines.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": 2}) + "\n")
    array.write_text(json.dumps([{"text": "three"}, {"text": "four"}]))
    got = sorted((r["text"], r["invalid"]) for r in ingest.read_documents(ingest.discover([str(lines), str(array)]), "text").take_all())
    assert got == [("", "not_string"), ("four", ""), ("one", ""), ("three", "")]


def test_text_files_are_read_line_by_line_and_a_stray_byte_does_not_fail_them(ray_session, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"\xef\xbb\xbffirst line\r\n\r\nsecond caf\xe9 line\n   \nthird line\n")
    ingest.validate(ingest.discover([str(f)]), "text")  # the first line is checked, the rest read leniently
    rows = ingest.read_documents(ingest.discover([str(f)]), "text").take_all()
    assert sorted(r["text"] for r in rows) == ["first line", "second caf\ufffd line", "third line"]
