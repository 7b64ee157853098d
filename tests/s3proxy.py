"""A flaky proxy in front of the real loopback S3 server: it answers 503 (SlowDown) to inject
transient and persistent S3 errors, and forwards everything else unchanged."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlparse


class FlakyProxy(BaseHTTPRequestHandler):
    """Fails the first `fail_first` requests (only those whose method is in `methods` and whose
    path contains `path_part`, when set) with 503; `failed` counts the failures answered."""

    protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue` as S3 clients expect
    upstream = ""
    fail_first = 0
    path_part = ""
    methods = ("GET", "PUT", "POST", "HEAD", "DELETE")
    seen = failed = 0

    @classmethod
    def reset(cls, upstream: str) -> None:
        cls.upstream, cls.fail_first, cls.path_part, cls.seen, cls.failed = upstream, 0, "", 0, 0
        cls.methods = ("GET", "PUT", "POST", "HEAD", "DELETE")

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

    def _targeted(self) -> bool:
        cls = type(self)
        return self.command in cls.methods and cls.path_part in self.path

    def _handle(self):
        body = self._body()
        cls = type(self)
        if self._targeted():
            cls.seen += 1
            if cls.seen <= cls.fail_first:
                cls.failed += 1
                msg = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
        up = urlparse(cls.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("expect", "transfer-encoding", "content-length")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        # HEAD has no body but must still say the object's size
        self.send_header("Content-Length",
                         resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def log_message(self, *args):
        pass
