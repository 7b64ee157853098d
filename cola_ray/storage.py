"""Local and S3 locations behind one interface: pyarrow filesystems, atomic writes, retries.

Everything cola-ray reads or writes goes through here (and Ray Data receives the same pyarrow
filesystem objects), so `AWS_ENDPOINT_URL` and the standard AWS credential chain apply to all of it.
Knows nothing of stages.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

from cola_ray.errors import UserError

T = TypeVar("T")
RETRIES = int(os.environ.get("COLA_RAY_STORAGE_RETRIES", "5"))


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _s3_filesystem() -> pafs.S3FileSystem:
    kwargs: dict = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        # pyarrow's own retry layer handles throttling and 5xx inside a single call.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
        kwargs["allow_bucket_creation"] = True
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=1)
def _hf_filesystem() -> pafs.FileSystem:
    from huggingface_hub import HfFileSystem

    return pafs.PyFileSystem(pafs.FSSpecHandler(HfFileSystem()))


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or an s3:// URI."""
    if is_s3(uri):
        return _s3_filesystem(), uri[len("s3://"):].rstrip("/")
    if uri.startswith("hf://"):  # a dataset file on the Hugging Face hub (stages/hub.py): read-only
        return _hf_filesystem(), uri[len("hf://"):]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def to_uri(uri_like: str, path: str) -> str:
    """Turn a filesystem path back into a URI of the same kind as `uri_like`."""
    if uri_like.startswith("hf://"):
        return f"hf://{path}"
    return f"s3://{path}" if is_s3(uri_like) else path


def join(uri: str, *parts: str) -> str:
    base = uri.rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


# a full disk, a quota, a file-size limit or a read-only mount: retrying cannot help
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


def _transient(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(e, OSError) and e.errno in _NO_ROOM:
        return False
    text = str(e)
    permanent = ("AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "NoSuchKey", "Path does not exist")
    return isinstance(e, OSError) and not any(p in text for p in permanent)


def with_retries(what: str, fn: Callable[[], T], attempts: int | None = None) -> T:
    """Run fn, retrying transient storage errors with exponential backoff and jitter; a
    persistent failure becomes a one-line UserError naming the operation."""
    attempts = attempts or RETRIES
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if not _transient(e) or i == attempts - 1:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                if isinstance(e, OSError) and e.errno in _NO_ROOM:  # not the temp file's name
                    first = f"{e.strerror} (errno {errno.errorcode[e.errno]})"
                suffix = f" after {attempts} attempts" if _transient(e) else ""
                raise UserError(f"storage: {what} failed{suffix}: {first}") from e
            time.sleep(min(8.0, 0.2 * 2**i) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write: readers see the old object or the whole new one, never a torn file.
    S3 PUTs are atomic; local writes go to a temp file in the same folder, then os.replace."""
    fs, path = filesystem(uri)

    def _write() -> None:
        if is_s3(uri):
            with fs.open_output_stream(path) as f:
                f.write(data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:  # a full disk: no half-written temp file left behind; the old file stays
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    with_retries(f"write {uri}", _write)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)

    def _read() -> bytes:
        with fs.open_input_stream(path) as f:
            return f.read()

    return with_retries(f"read {uri}", _read)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(uri: str):
    return json.loads(read_bytes(uri))


def write_parquet(uri: str, table) -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(uri, buf.getvalue())


def move(src: str, dst: str) -> None:
    """Move a file within one filesystem: a rename on local disks (no bytes written, so it works
    on a full disk), a server-side copy then delete on S3."""
    fs, src_path = filesystem(src)
    _, dst_path = filesystem(dst)

    def _move() -> None:
        if not is_s3(src):
            os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        fs.move(src_path, dst_path)

    with_retries(f"move {src} to {dst}", _move)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    info = with_retries(f"stat {uri}", lambda: fs.get_file_info(path))
    return info.type != pafs.FileType.NotFound


def delete(uri: str) -> None:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        with_retries(f"delete {uri}", lambda: fs.delete_file(path))
    elif info.type == pafs.FileType.Directory:
        with_retries(f"delete {uri}", lambda: fs.delete_dir(path))


def list_files(uri: str, suffix: str = "") -> list[str]:
    """All files under a folder/prefix (recursive), as URIs, sorted; [] if it does not exist."""
    fs, path = filesystem(uri)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    infos = with_retries(f"list {uri}", lambda: fs.get_file_info(selector))
    return sorted(to_uri(uri, i.path) for i in infos
                  if i.type == pafs.FileType.File and i.path.endswith(suffix))


def glob_regex(pattern: str) -> "re.Pattern[str]":
    """Shell-glob semantics over '/'-separated keys: * and ? stay within one path segment, **
    spans segments. fnmatch lets * cross '/', and pyarrow has no glob for S3, hence by hand."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1: j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class Match:
    uri: str
    size: int


def expand(uri: str) -> list[Match]:
    """Files named by a URI: a file, every file under a folder, or a glob (*, ?, [..], **)."""
    fs, path = filesystem(uri)
    if not any(ch in path for ch in "*?["):
        info = with_retries(f"stat {uri}", lambda: fs.get_file_info(path))
        if info.type == pafs.FileType.File:
            return [Match(uri, info.size)]
        if info.type == pafs.FileType.NotFound:
            return []
        pattern, base = None, path
    else:
        head = path.split("*")[0].split("?")[0].split("[")[0]
        base, pattern = head.rsplit("/", 1)[0] if "/" in head else "", glob_regex(path)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    infos = with_retries(f"list {uri}", lambda: fs.get_file_info(selector))
    out = [
        Match(to_uri(uri, i.path), i.size)
        for i in infos
        if i.type == pafs.FileType.File
        and (pattern is None or pattern.fullmatch(i.path))
        and not basename(i.path).startswith((".", "_"))
    ]
    return sorted(out, key=lambda m: m.uri)


def check_writable(uri: str) -> None:
    """Fail early, with the culprit named, if --out cannot be written."""
    probe = join(uri, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes(probe, b"ok")
        delete(probe)
    except UserError as e:
        raise UserError(f"--out {uri}: not writable ({e})") from None
    except OSError as e:
        raise UserError(f"--out {uri}: not writable ({e.strerror or e})") from None


def read_parquet(uris: list[str], columns: list[str] | None = None, filter=None):
    """Read parquet files (local or S3) into one Arrow table with pyarrow's multi-threaded
    dataset reader; for driver-side reads of narrow columns (ledgers, selected rows)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    if not uris:
        return pa.table({c: [] for c in columns or []})
    fs, _ = filesystem(uris[0])
    paths = [filesystem(u)[1] for u in uris]
    return with_retries(f"read {len(uris)} parquet file(s) under {uris[0].rsplit('/', 1)[0]}",
                        lambda: pads.dataset(paths, format="parquet", filesystem=fs).to_table(
                            columns=columns, filter=filter))
