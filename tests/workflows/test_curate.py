"""End-to-end curate runs on the tiny model: determinism, output contract, S3, resume, bad input."""

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from cola_ray import storage
from cola_ray.cli import main
from cola_ray.config import CurateConfig
from cola_ray.pool import Pool
from cola_ray.workflows.curate import SHARDS, run_curate
from tests.conftest import _write_jsonl, code_texts, news_texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate-corpus")
    news = news_texts()[:30]
    line = ("The river rose two metres overnight and the town council closed the old bridge to traffic. "
            "Engineers will inspect its pillars on Monday.")  # long enough for the quality filter
    # `line` twice (a repeated document: one id stored twice, resolved by the pool) and once more
    # up to case and spaces (a near-dedup 'duplicate' decided before chunking)
    _write_jsonl(root / "news.jsonl", news + [line, "  " + line.replace(" the ", "  The "), line])
    _write_jsonl(root / "code.jsonl", [t[:1500] for t in code_texts(12)])
    return root


def _cfg(model, corpus, out, **kw):
    base = dict(model=str(model), corpus=[str(corpus / "news.jsonl"), str(corpus / "code.jsonl")], out=str(out),
                num_samples=8, seq_len=64, min_tokens=8, proj_dim=16, kmeans_iters=10, kmeans_restarts=2)
    base.update(kw)
    return CurateConfig(**base)


@pytest.fixture(scope="module")
def reference_run(ray_session, tiny_llama, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    manifest = run_curate(_cfg(tiny_llama, corpus, out, workers=1, batch_size=4))
    return out, manifest


def test_outputs_follow_the_contract(reference_run):
    import datasets

    out, manifest = reference_run
    calib = datasets.load_dataset("json", data_files=str(out / "calibration.jsonl"), split="train")
    assert len(calib) == 8
    assert {"id", "text", "source", "cluster", "distance", "num_tokens"} <= set(calib.column_names)
    assert sorted(calib["cluster"]) == list(range(8))
    assert all(0 < n <= 64 for n in calib["num_tokens"])
    emb = pq.read_table(out / "embeddings")
    assert {"id", "source", "num_tokens", "vector", "cluster", "distance"} <= set(emb.column_names)
    assert emb.num_rows == manifest["counts"]["embedded"]
    assert len(emb.column("vector")[0]) == 16
    centroids = np.load(out / "centroids.npy")
    assert centroids.shape == (8, 16) and centroids.dtype == np.float32
    on_disk = json.loads((out / "manifest.json").read_text())
    counts = on_disk["counts"]
    assert counts["duplicates"] == 2 and counts["dropped"]["duplicate"] == 2
    assert set(counts["per_source"]) == {"news", "code"}
    assert counts["per_source"]["news"]["documents"] == 33
    assert counts["selected"] == 8 == sum(s["selected"] for s in counts["per_source"].values())
    assert on_disk["model"]["weights_sha256"] and on_disk["versions"]["ray"]
    assert on_disk["selection"]["details"]["objective"] > 0 and on_disk["timings_s"]
    # every selected chunk is its cluster's member nearest the centroid
    for row in calib:
        members = emb.filter(np.array(emb.column("cluster").to_pylist()) == row["cluster"]).to_pylist()
        best = min(members, key=lambda r: (r["distance"], r["id"]))
        assert best["id"] == row["id"]


@pytest.mark.gpu
def test_curate_on_cuda_in_bfloat16_agrees_with_cpu_float32(ray_session, tiny_llama, corpus, tmp_path):
    """The GPU path end to end: activation actors on one GPU each, the model in bf16 (the CUDA
    default), FAISS on the GPU when faiss-gpu is installed. Same pool rows as the CPU float32 run,
    each vector within bf16 noise of the CPU one; k rows, none empty. The selection itself may
    differ by a chunk or two (k-means representatives swap under noise far smaller than bf16's,
    docs/results.md 3a), so it is compared by bench/gpu_check.sh, not asserted here."""
    cpu = run_curate(_cfg(tiny_llama, corpus, tmp_path / "cpu", device="cpu", dtype="float32"))
    gpu = run_curate(_cfg(tiny_llama, corpus, tmp_path / "gpu", device="cuda"))
    assert gpu["device"] == "cuda" and gpu["counts"]["embedded"] == cpu["counts"]["embedded"]
    rows = [json.loads(line) for line in (tmp_path / "gpu" / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["text"] for r in rows)
    a, b = (Pool.open(str(tmp_path / run / SHARDS)).read(["id", "vector"]).sort_by("id") for run in ("cpu", "gpu"))
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    va, vb = (np.asarray(t.column("vector").to_pylist(), dtype=np.float64) for t in (a, b))
    cosine = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    assert cosine.min() >= 0.99


def test_same_selection_with_more_workers_and_other_batch_sizes(reference_run, tiny_llama, corpus, tmp_path):
    out, _ = reference_run
    other = tmp_path / "two-workers"
    run_curate(_cfg(tiny_llama, corpus, other, workers=2, batch_size=16, shard_size=32))
    assert (other / "calibration.jsonl").read_text() == (out / "calibration.jsonl").read_text()
    # the pool's resolution of repeats does not depend on which shard or worker a copy landed in
    counts = [json.loads((d / "manifest.json").read_text())["counts"] for d in (out, other)]
    assert counts[0] == counts[1] and counts[0]["duplicates"] == 2


def test_rerun_resumes_from_written_shards(reference_run, tiny_llama, corpus, tmp_path, capfd):
    import shutil

    out, _ = reference_run
    crashed = tmp_path / "crashed"
    shutil.copytree(out / SHARDS, crashed / SHARDS)
    shards = sorted((crashed / SHARDS).glob("*.parquet"))
    shards[0].unlink()  # the run "died" before this shard was written
    manifest = run_curate(_cfg(tiny_llama, corpus, crashed, workers=1, batch_size=4))
    assert manifest["resume"]["shards_reused"] == len(shards) - 1
    assert 0 < manifest["resume"]["rows_new"] < manifest["counts"]["chunks"] + 1
    assert "resuming: " in capfd.readouterr().err
    assert (crashed / "calibration.jsonl").read_text() == (out / "calibration.jsonl").read_text()
    # the per-chunk layer statistics survive a resume: the same rows and layout as the undisturbed pool
    from cola_ray.pool import STAT_COLUMNS, Pool

    before, after = Pool.open(str(out / SHARDS)), Pool.open(str(crashed / SHARDS))
    assert after.stats_layout() == before.stats_layout() and before.stats_layout()["slots"]
    a, b = (p.read(list(STAT_COLUMNS)).to_pydict() for p in (before, after))
    assert a["id"] == b["id"]
    for col in STAT_COLUMNS:
        assert np.allclose(np.concatenate(a[col]), np.concatenate(b[col]), rtol=1e-4, atol=1e-6), col


def test_rerun_with_other_settings_is_refused(reference_run, tiny_llama, corpus):
    out, _ = reference_run
    from cola_ray.errors import UserError

    with pytest.raises(UserError, match="other settings .*proj_dim"):
        run_curate(_cfg(tiny_llama, corpus, out, proj_dim=8))


def test_s3_in_and_out(reference_run, tiny_llama, corpus, s3_bucket):
    import boto3

    s3 = boto3.client("s3")
    for name in ("news.jsonl", "code.jsonl"):
        s3.upload_file(str(corpus / name), s3_bucket, f"corpus/{name}")
    out = f"s3://{s3_bucket}/runs/e2e"
    cfg = dataclasses.replace(_cfg(tiny_llama, corpus, out, workers=1, batch_size=4),
                              corpus=[f"s3://{s3_bucket}/corpus/news.jsonl", f"s3://{s3_bucket}/corpus/code.jsonl"])
    run_curate(cfg)
    local, _ = reference_run
    assert storage.read_bytes(f"{out}/calibration.jsonl").decode() == (local / "calibration.jsonl").read_text()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/e2e/")["Contents"]}
    assert {"runs/e2e/manifest.json", "runs/e2e/centroids.npy"} <= keys
    assert any(k.startswith("runs/e2e/embeddings/") for k in keys)


def _bert(tmp_path):
    from transformers import BertConfig, BertModel

    path = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100)).save_pretrained(path)
    return path


@pytest.mark.parametrize("case", ["missing-model", "not-causal", "no-files", "no-field", "corrupt",
                                  "unwritable", "too-few", "layers", "seq-len", "all-empty", "dense-experts",
                                  "allow-more-alone"])
def test_bad_input_is_one_line_and_no_manifest(case, ray_session, tiny_llama, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["curate", "--model", str(tiny_llama), "--corpus", str(corpus / "news.jsonl"), "--out", str(out),
            "--seq-len", "64", "--min-tokens", "8", "--num-samples", "4"]
    expect = {}
    if case == "missing-model":
        args[2], expect = str(tmp_path / "nope"), "does not exist"
    elif case == "not-causal":
        args[2], expect = str(_bert(tmp_path)), "not a decoder-only causal LM"
    elif case == "no-files":
        args[4], expect = str(tmp_path / "*.parquet"), "matches no readable files"
    elif case == "no-field":
        args += ["--text-field", "body"]
        expect = "no field 'body'"
    elif case == "corrupt":
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(b"\xff\xfe{not json")
        args[4], expect = str(bad), "unreadable or corrupt"
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
        args[6], expect = str(out), "not writable"
    elif case == "too-few":
        args[-1], expect = "100000", "--num-samples 100000: only"
    elif case == "layers":  # refused before anything heavy starts, not from inside an actor
        args += ["--layers", "0,99"]
        expect = "--layers '0,99': layer 99 out of range for a 4-layer model"
    elif case == "all-empty":  # used to end in a pyarrow traceback from the near-dedup shuffle
        empty = tmp_path / "empty.jsonl"
        empty.write_text('{"text": ""}\n' * 5 + '{"text": "   "}\n')
        args[4], expect = str(empty), "no chunk survived processing (dropped: duplicate=4, empty=2)"
    elif case == "seq-len":
        args[8], expect = "100000", "--seq-len 100000: longer than --model"
    elif case == "dense-experts":
        args += ["--min-tokens-per-expert", "4"]
        expect = "--min-tokens-per-expert 4: --model " + str(tiny_llama) + " is dense (LlamaForCausalLM"
    elif case == "allow-more-alone":
        args += ["--allow-more"]
        expect = "--allow-more: only with --min-tokens-per-expert"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cola-ray: error: ") and expect in err[-1], err[-1]
    assert not (out / "manifest.json").exists()


def _rerun_args(tiny_llama, corpus, out) -> list[str]:
    """The CLI form of the reference run's settings, on another --out."""
    return ["curate", "--model", str(tiny_llama), "--corpus", str(corpus / "news.jsonl"), "--corpus", str(corpus / "code.jsonl"),
            "--out", str(out), "--num-samples", "8", "--seq-len", "64", "--min-tokens", "8", "--proj-dim", "16",
            "--kmeans-iters", "10", "--kmeans-restarts", "2", "--workers", "1", "--batch-size", "4"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("cola-ray: error: "), err[-5:]
    assert not any("Traceback" in line for line in err), err
    return err[-1]


def test_a_full_disk_while_writing_the_outputs_is_one_line_and_keeps_the_old_files(
        reference_run, tiny_llama, corpus, tmp_path, monkeypatch, capsys):
    """The rerun of a complete run hits a file-size limit (RLIMIT_FSIZE: the kernel answers
    EFBIG, as a full disk answers ENOSPC) while it writes its outputs. The limit is set for the
    outputs' writing only: for the whole process it would also stop Ray's own log files under
    /tmp/ray, which a full --out disk need not hold. One line, exit 2; no manifest (the old one
    was moved to history/, without writing a byte); the old calibration.jsonl whole; no temp file."""
    import resource
    import shutil

    from cola_ray.workflows import selection

    out, _ = reference_run
    full = tmp_path / "full"
    shutil.copytree(out, full)
    old = (full / "calibration.jsonl").read_bytes()
    real = selection.write_selection

    def on_a_full_disk(*args, **kwargs):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(old) // 2, hard))
        try:
            return real(*args, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    monkeypatch.setattr(selection, "write_selection", on_a_full_disk)
    assert main(_rerun_args(tiny_llama, corpus, full)) == 2
    line = _one_line(capsys)
    assert line == f"cola-ray: error: storage: write {full}/calibration.jsonl failed: File too large (errno EFBIG)", line
    assert not (full / "manifest.json").exists() and list((full / "history").glob("manifest-*.json"))
    assert (full / "calibration.jsonl").read_bytes() == old
    assert not list(full.rglob("*.tmp-*"))


def test_s3_errors_on_the_final_writes_are_retried_then_one_line(reference_run, tiny_llama, corpus, flaky_s3,
                                                                 s3_bucket, monkeypatch, capsys):
    """--out on S3 whose server answers 503 to every write of calibration.jsonl: retried, then
    one line naming the object, exit 2, and no manifest.json beside the failure."""
    import boto3

    out, _ = reference_run
    s3, prefix = boto3.client("s3"), "runs/final-write-errors"
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        s3.upload_file(str(path), s3_bucket, f"{prefix}/{path.relative_to(out)}")
    monkeypatch.setattr(storage, "RETRIES", 2)
    flaky_s3.fail_first, flaky_s3.path_part, flaky_s3.methods = 10**9, "calibration.jsonl", ("PUT", "POST")
    assert main(_rerun_args(tiny_llama, corpus, f"s3://{s3_bucket}/{prefix}")) == 2
    line = _one_line(capsys)
    assert f"storage: write s3://{s3_bucket}/{prefix}/calibration.jsonl failed after 2 attempts" in line, line
    assert flaky_s3.failed >= 2
    assert not storage.exists(f"s3://{s3_bucket}/{prefix}/manifest.json")


@pytest.fixture(scope="module")
def repeated_run(ray_session, tiny_llama, tmp_path_factory):
    """A crawl-like corpus: one document three times in one source, one in two sources."""
    root = tmp_path_factory.mktemp("repeated")
    news, code = news_texts()[70:82], [t[:900] for t in code_texts(4)]
    _write_jsonl(root / "news.jsonl", news + [news[0], news[0], news[3]])
    _write_jsonl(root / "more.jsonl", news[3:6] + [code[0]])
    _write_jsonl(root / "code.jsonl", code)
    out = root / "out"
    args = ["curate", "--model", str(tiny_llama), "--out", str(out), "--seq-len", "64", "--min-tokens", "8",
            "--num-samples", "10", "--proj-dim", "16"]
    for name in ("news", "more", "code"):
        args += ["--corpus", str(root / f"{name}.jsonl")]
    return out, args + ["--selector", "random"]


def test_repeated_documents_are_counted_duplicates_and_never_selected_twice(repeated_run, capsys):
    out, args = repeated_run
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["text"] for r in rows) and len({r["id"] for r in rows}) == 10
    c = json.loads((out / "manifest.json").read_text())["counts"]
    assert c["per_source"]["news"]["documents"] == 15  # every copy read is a document ...
    assert c["duplicates"] >= 3  # ... and the copies, within and across sources, exact duplicates
    led = Pool.open(str(out / SHARDS)).ledger().column("id").to_pylist()
    assert len(led) == len(set(led))  # chunk ids are unique in the pool (stored repeats resolved)
    assert "selector: random" in capsys.readouterr().out


def test_candidate_budget_samples_every_source_before_tokenization(repeated_run, capsys):
    """--max-candidates 12 over sources of 15, 4 and 4 documents: the two small ones whole, the
    dominant one sampled by id hash; the manifest says how many documents were skipped."""
    out, args = repeated_run
    budget_out = out.parent / "budget"
    args = [*args, "--max-candidates", "12"]
    args[args.index("--out") + 1] = str(budget_out)
    assert main(args) == 0
    m = json.loads((budget_out / "manifest.json").read_text())
    b = m["processing"]["budget"]
    assert {s: v["documents"] for s, v in b["per_source"].items()} == {"code": 4, "more": 4, "news": 15}
    assert b["per_source"]["code"]["fraction"] == 1.0 and b["per_source"]["news"]["fraction"] == pytest.approx(4 / 15, abs=1e-6)
    news = m["counts"]["per_source"]["news"]["documents"]
    assert news < 15 and b["per_source"]["news"]["skipped"] == 15 - news
    assert m["counts"]["per_source"]["code"]["documents"] == 4
    assert "candidate budget:" in capsys.readouterr().out


@pytest.mark.parametrize("selector", ["cola", "moment-match", "lexical", "perplexity"])
def test_every_selector_writes_k_rows_one_manifest_shape_and_a_summary(repeated_run, selector, capsys):
    """Same pool (resumed: nothing embedded again), any selector: k rows, the same manifest
    keys, the end-of-run summary printed by the CLI."""
    out, args = repeated_run
    if not (out / "manifest.json").exists():
        assert main(args) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert main([*args[:-1], selector]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == set(first) and manifest["resume"]["rows_new"] == 0
    assert manifest["selection"]["selector"] == selector and manifest["schema_version"] == 2
    rows = (out / "calibration.jsonl").read_text().splitlines()
    assert len(rows) == 10 and all(json.loads(r)["text"] for r in rows)
    printed = capsys.readouterr().out
    assert f"selector: {selector}" in printed and "total" in printed and "output:" in printed


def test_records_whose_text_is_not_a_string_are_counted_drops(ray_session, tiny_llama, tmp_path, capsys):
    """A crawl export with a number, a list and an object in some records' text field (Ray's
    JSON reader failed the whole file on them): the run succeeds, counts them as not_string, and
    the counts add up (documents read = kept + dropped by reason)."""
    corpus = tmp_path / "mixed.jsonl"
    good = news_texts()[:10]
    lines = [json.dumps({"text": t}) for t in good[:5]] + [json.dumps({"text": 7}), json.dumps({"text": [1, 2]}),
                                                          json.dumps({"text": {"a": "b"}})]
    corpus.write_text("\n".join(lines + [json.dumps({"text": t}) for t in good[5:]]) + "\n")
    out = tmp_path / "out"
    assert main(["curate", "--model", str(tiny_llama), "--corpus", str(corpus), "--out", str(out), "--seq-len", "64",
                 "--min-tokens", "8", "--num-samples", "4", "--proj-dim", "16", "--selector", "random"]) == 0
    c = json.loads((out / "manifest.json").read_text())["counts"]
    assert c["documents"] == 13 and c["dropped"]["not_string"] == 3
    rows = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"] for r in rows)
    assert "not_string=3" in capsys.readouterr().out


def test_a_file_corrupt_partway_fails_with_its_name_or_is_skipped_on_request(ray_session, tiny_llama, tmp_path, capsys):
    """A .jsonl.gz cut in the middle of a large corpus, and a parquet file with a damaged row
    group: without --skip-bad-files one line naming a file and the position, exit 2, no
    manifest; with it the run succeeds, keeps the records before the damage and lists both
    files in the manifest and the summary."""
    import gzip

    from tests.conftest import write_damaged_parquet

    good = tmp_path / "corpus" / "good.jsonl"
    good.parent.mkdir()
    _write_jsonl(good, news_texts()[:12])
    words = " ".join(news_texts()).split()
    rng = np.random.default_rng(0)  # shuffled words: a .gz large enough to be cut past its first records
    payload = gzip.compress("".join(json.dumps({"text": " ".join(rng.choice(words, 150))}) + "\n"
                                    for _ in range(1200)).encode())
    (tmp_path / "corpus" / "cut.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    write_damaged_parquet(tmp_path / "corpus" / "crawl.parquet", news_texts()[20:50])
    out = tmp_path / "out"
    args = ["curate", "--model", str(tiny_llama), "--corpus", str(tmp_path / "corpus"), "--out", str(out),
            "--seq-len", "64", "--min-tokens", "8", "--num-samples", "4", "--proj-dim", "16", "--selector", "random",
            "--near-dup-threshold", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cola-ray: error:") and (
        "cut.jsonl.gz: unreadable or corrupt jsonl file after line" in err
        or "crawl.parquet: unreadable or corrupt parquet file at row group 1 of 3 (after record 10)" in err), err
    assert not (out / "manifest.json").exists()
    assert main([*args, "--skip-bad-files"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    parquet_note, gz_note = m["processing"]["skipped_files"]  # by file name
    assert gz_note["file"].endswith("cut.jsonl.gz") and 0 < gz_note["records_kept"] < 1200
    assert parquet_note["file"].endswith("crawl.parquet") and parquet_note["records_kept"] == 10
    assert m["counts"]["documents"] == 12 + gz_note["records_kept"] + 10
    assert "skipped the rest of" in capsys.readouterr().out
