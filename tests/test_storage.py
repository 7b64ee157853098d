"""storage.py against real servers: local files, the loopback S3 server, and a flaky proxy in
front of it that answers 503 (SlowDown) to inject transient and persistent S3 errors
(tests/s3proxy.py, the `flaky_s3` fixture)."""

import os
import resource

import pytest

from cola_ray import storage
from cola_ray.errors import UserError


def test_local_roundtrip_listing_and_globs(tmp_path):
    storage.write_text(str(tmp_path / "a" / "x.jsonl"), "1")
    storage.write_text(str(tmp_path / "a" / "b" / "y.jsonl"), "2")
    storage.write_text(str(tmp_path / "a" / "z.txt"), "3")
    assert storage.read_bytes(str(tmp_path / "a" / "x.jsonl")) == b"1"
    assert [m.uri.rsplit("/", 1)[1] for m in storage.expand(str(tmp_path / "a"))] == ["y.jsonl", "x.jsonl", "z.txt"]
    assert len(storage.expand(str(tmp_path / "a" / "*.jsonl"))) == 1
    assert len(storage.expand(str(tmp_path / "a" / "**" / "*.jsonl"))) == 2
    assert storage.expand(str(tmp_path / "missing")) == []
    assert not list((tmp_path / "a").glob("*.tmp-*"))  # atomic writes leave no temp files


def test_s3_roundtrip(s3_bucket):
    uri = f"s3://{s3_bucket}/storage-test/obj.json"
    storage.write_json(uri, {"a": 1})
    assert storage.read_json(uri) == {"a": 1} and storage.exists(uri)
    assert storage.list_files(f"s3://{s3_bucket}/storage-test") == [uri]
    storage.delete(uri)
    assert not storage.exists(uri)


def test_transient_s3_errors_are_retried(flaky_s3, s3_bucket):
    flaky_s3.fail_first = 4  # more than pyarrow's own 3 attempts: our backoff layer must retry too
    uri = f"s3://{s3_bucket}/retry/ok.txt"
    storage.write_text(uri, "survived")
    assert storage.read_bytes(uri) == b"survived"
    assert flaky_s3.failed == 4


def test_persistent_s3_error_fails_with_a_clear_message(flaky_s3, s3_bucket, monkeypatch):
    monkeypatch.setattr(storage, "RETRIES", 2)
    flaky_s3.fail_first = 10**9
    with pytest.raises(UserError, match=r"storage: write s3://.*/retry/never.txt failed after 2 attempts"):
        storage.write_text(f"s3://{s3_bucket}/retry/never.txt", "x")


def test_a_full_disk_fails_at_once_and_leaves_the_old_file(tmp_path, monkeypatch):
    """A file-size limit (RLIMIT_FSIZE: the kernel answers EFBIG, as a full disk answers ENOSPC):
    one attempt, a one-line error without the temp file's name, the old file whole, no temp file."""
    target = tmp_path / "calibration.jsonl"
    target.write_text("old complete run\n")
    calls = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: calls.append(a[0]) or real_open(*a, **k))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(UserError) as info:
            storage.write_bytes(str(target), b"x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(info.value)
    assert message == f"storage: write {target} failed: File too large (errno EFBIG)", message
    assert len([c for c in calls if ".tmp-" in str(c)]) == 1  # not retried
    assert target.read_text() == "old complete run\n"
    assert os.listdir(tmp_path) == ["calibration.jsonl"]
