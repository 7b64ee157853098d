"""Property: nothing a corpus holds crashes curate (issue 14).

A generator builds small corpora from a grammar of real-world damage (empty and whitespace
texts, non-string and missing fields, nested objects, conversations good and malformed
(`messages` and ShareGPT `conversations`, rendered by the model's chat template), BOMs, NUL bytes, lone surrogates, mixed
encodings, CRLF, very long lines, zero-byte files, files cut mid-record, parquet files with
null or non-string text columns or a damaged row group, duplicate and near-duplicate documents,
a folder named like a data file, good and bad files mixed; now and then the corpus is on the
loopback S3 server instead of a local folder). Whatever
it builds, `cola-ray curate` either succeeds with counts that add up (every record read is a
document; every ledger row is embedded or dropped for a reason) and exactly k rows none empty,
or exits 2 with one `cola-ray: error:` line naming a file or option, and no manifest. Never a
traceback, never exit 1.

The suite runs a fixed, derandomized handful of examples (COLA_RAY_HOSTILE_EXAMPLES, default 6);
set it higher for a longer local run.
"""

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cola_ray.cli import main  # noqa: E402
from tests.conftest import news_texts, write_damaged_parquet  # noqa: E402

NEWS = news_texts()[100:160]
EXAMPLES = int(os.environ.get("COLA_RAY_HOSTILE_EXAMPLES", "6"))

def _raw(text: str) -> bytes:
    """Text to splice into a hand-written JSON string (no quote or backslash to escape)."""
    return text.encode()[:200].replace(b'"', b"'").replace(b"\\", b"")


def _exchange(t: str, style: str) -> bytes:
    """A conversation record of one exchange (it never splits: one record, one document)."""
    if style == "messages":
        return json.dumps({"messages": [{"role": "user", "content": t[:90]}, {"role": "assistant",
                                                                              "content": t[90:200]}]}).encode()
    return json.dumps({"conversations": [{"from": "human", "value": t[:90]}, {"from": "gpt",
                                                                              "value": t[90:200]}]}).encode()


# one record as raw JSON-lines bytes
GOOD = st.one_of(
    st.sampled_from(NEWS).map(lambda t: json.dumps({"text": t}).encode()),
    st.tuples(st.sampled_from(NEWS), st.sampled_from(["messages", "conversations"])).map(lambda a: _exchange(*a)),
)
DAMAGED = st.one_of(
    st.just(json.dumps({"text": ""}).encode()),
    st.just(json.dumps({"text": "  \n\t "}).encode()),
    st.sampled_from([1, 2.5, True, None, [1, "a"], {"nested": {"deep": "x"}}]).map(lambda v: json.dumps({"text": v}).encode()),
    st.just(json.dumps({"body": "no text field"}).encode()),
    st.sampled_from(NEWS).map(lambda t: json.dumps({"text": t[:80] + "\x00" + t[80:]}).encode()),  # NUL
    st.sampled_from(NEWS).map(lambda t: b'{"text": "\\ud800 ' + _raw(t) + b'"}'),
    st.sampled_from(NEWS).map(lambda t: b'{"text": "caf\xe9 ' + _raw(t) + b'"}'),
    st.sampled_from(NEWS).map(lambda t: json.dumps({"text": (t + " ") * 60}).encode()),  # a very long line
    st.sampled_from([{"messages": "not a list"}, {"messages": []}, {"messages": [{"role": "wizard", "content": "x"}]},
                     {"messages": [{"role": "user", "content": 3}]}, {"conversations": [["human", "hi"]]},
                     {"messages": [{"role": "user"}]}]).map(lambda r: json.dumps(r).encode()),  # bad conversations
)


@st.composite
def jsonl_file(draw):
    records = draw(st.lists(st.one_of(GOOD, GOOD, DAMAGED), min_size=1, max_size=12))
    if draw(st.booleans()) and records:  # a duplicate and a near duplicate of the first record
        first = json.loads(records[0].decode("utf-8", "replace"))
        records.append(records[0])
        if isinstance(first.get("text"), str) and len(first["text"]) > 40:
            records.append(json.dumps({"text": first["text"].replace(" ", "  ", 1) + " extra"}).encode())
    sep = b"\r\n" if draw(st.booleans()) else b"\n"
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + sep.join(records) + sep
    cut = draw(st.booleans()) and draw(st.integers(0, 9)) == 0  # now and then, a file cut mid-record
    if cut:
        data = data[: len(data) - len(records[-1]) // 2 - len(sep)]
    return {"kind": draw(st.sampled_from(["jsonl", "jsonl.gz"])), "data": data,
            "records": sum(1 for r in data.replace(b"\r", b"").split(b"\n") if r.strip()), "cut": cut}


PARQUET_FILE = st.one_of(
    st.lists(st.one_of(st.sampled_from(NEWS), st.sampled_from(NEWS), st.none(), st.just("")), min_size=1,
             max_size=6).map(lambda ts: {"kind": "parquet", "texts": ts, "records": len(ts), "cut": False}),
    st.lists(st.integers(0, 9), min_size=1, max_size=4).map(  # a text column that is not strings
        lambda ts: {"kind": "parquet", "texts": ts, "records": len(ts), "cut": False}),
    st.lists(st.sampled_from(NEWS), min_size=3, max_size=9).map(  # a row group damaged partway
        lambda ts: {"kind": "parquet", "texts": ts, "records": len(ts), "cut": True, "damaged": True}),
    st.just({"kind": "parquet", "data": b"", "records": 0, "cut": False}),  # zero bytes
)

CORPUS_FILE = st.one_of(
    jsonl_file(), jsonl_file(),
    st.just({"kind": "jsonl", "data": b"", "records": 0, "cut": False}),  # zero bytes
    PARQUET_FILE,
    st.lists(st.sampled_from(NEWS), min_size=1, max_size=6).map(
        lambda ts: {"kind": "txt", "data": "\n".join(ts).encode() + b"\n", "records": len(ts), "cut": False}),
    st.just({"kind": "folder", "records": 0, "cut": False}),  # a folder named like a data file
)


def _write(root, files) -> int:
    root.mkdir(parents=True)
    for i, f in enumerate(files):
        name = root / f"part-{i}.{'jsonl' if f['kind'] == 'folder' else f['kind']}"
        if f["kind"] == "folder":
            name.mkdir()
        elif f.get("damaged"):
            write_damaged_parquet(name, f["texts"])
        elif f["kind"] == "parquet" and "texts" in f:
            pq.write_table(pa.table({"text": f["texts"]}), name)
        elif f["kind"] == "jsonl.gz":
            name.write_bytes(gzip.compress(f["data"]))
        else:
            name.write_bytes(f["data"])
    return sum(f["records"] for f in files)


def _upload(folder, bucket: str, prefix: str) -> str:
    import boto3

    s3 = boto3.client("s3")
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


@pytest.fixture(scope="module")
def chat_llama(tiny_llama, tmp_path_factory):
    from tests import tinymodels

    return tinymodels.with_chat_template(tiny_llama, tmp_path_factory.mktemp("hostile-model") / "model")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(files=st.lists(CORPUS_FILE, min_size=1, max_size=4), on_s3=st.integers(0, 3).map(lambda i: i == 0))
def test_any_hostile_corpus_succeeds_with_counts_that_add_up_or_fails_in_one_line(
        files, on_s3, ray_session, chat_llama, s3_bucket, tmp_path_factory, capsys):
    root = tmp_path_factory.mktemp("hostile")
    records = _write(root / "corpus", files)
    corpus = str(root / "corpus")
    if on_s3:  # the same files under an S3 prefix (S3 has no folders: a folder-named file is simply absent)
        corpus = _upload(root / "corpus", s3_bucket, f"hostile/{root.name}")
    out = root / "out"
    capsys.readouterr()
    rc = main(["curate", "--model", str(chat_llama), "--corpus", corpus, "--out", str(out),
               "--seq-len", "64", "--min-tokens", "8", "--num-samples", "4", "--proj-dim", "8",
               "--selector", "random", "--stat-layers", "0"])
    captured = capsys.readouterr()
    assert rc in (0, 2)
    if rc == 2:
        last = captured.err.strip().splitlines()[-1]
        assert last.startswith("cola-ray: error: ") and ("--" in last or str(root) in last
                                                         or corpus in last), last  # names it
        assert "Traceback" not in captured.err
        assert not (out / "manifest.json").exists()
        return
    assert not any(f["cut"] for f in files)  # a file cut mid-record never passes silently
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["documents"] == records  # every record read is a document ...
    from cola_ray.pool import Pool

    ledger = Pool.open(str(out / "work" / "activations")).ledger()
    assert ledger.num_rows == c["embedded"] + sum(c["dropped"].values())  # ... every row kept or dropped
    rows = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"].strip() for r in rows)
