"""storage.py against real servers: local files, the loopback S3 server, and a flaky proxy in
front of it that answers 503 (SlowDown) to inject transient and persistent S3 errors."""

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

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


class _FlakyProxy(BaseHTTPRequestHandler):
    """Forwards to the real S3 server, but first fails `fail_first` requests with 503."""

    protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue` as S3 clients expect
    upstream = ""
    fail_first = 0
    seen = 0

    def _body(self) -> bytes:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or ""):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def _handle(self):
        body = self._body()
        cls = type(self)
        cls.seen += 1
        if cls.seen <= cls.fail_first:
            msg = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        up = urlparse(cls.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "transfer-encoding", "content-length")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        # HEAD has no body but must still say the object's size
        self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def log_message(self, *args):
        pass


@pytest.fixture()
def flaky_s3(s3_endpoint, s3_bucket, monkeypatch):
    _FlakyProxy.upstream, _FlakyProxy.seen = s3_endpoint, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield _FlakyProxy
    server.shutdown()


def test_transient_s3_errors_are_retried(flaky_s3, s3_bucket):
    flaky_s3.fail_first = 4  # more than pyarrow's own 3 attempts: our backoff layer must retry too
    uri = f"s3://{s3_bucket}/retry/ok.txt"
    storage.write_text(uri, "survived")
    assert storage.read_bytes(uri) == b"survived"
    assert flaky_s3.seen > 4


def test_persistent_s3_error_fails_with_a_clear_message(flaky_s3, s3_bucket, monkeypatch):
    monkeypatch.setattr(storage, "RETRIES", 2)
    flaky_s3.fail_first = 10**9
    with pytest.raises(UserError, match=r"storage: write s3://.*/retry/never.txt failed after 2 attempts"):
        storage.write_text(f"s3://{s3_bucket}/retry/never.txt", "x")
