"""Line-based corpus files (JSON lines, plain text) read record by record (issue 14).

Why not Ray's read_json: pyarrow's JSON reader infers one type per column over a block, so one
record whose text is a number or a list fails the whole file ("JSONDecodeError: Extra data",
and an explicit schema refuses it too). So a reading task only splits a file into raw lines
(bytes, never decoded as a whole), and ingest.LabelDocuments parses each record alone: a text
field of the wrong type is one counted drop, a line that is not JSON is named by file and line
number. Memory per task: one block of lines plus the longest line. Plain .txt files (one
document per line) go through the same reader, decoded line by line, instead of Ray's
read_text, which failed the file on one byte that is not UTF-8.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from cola_ray import storage
from cola_ray.errors import UserError

LINE, LINE_NO = "_line", "_line_no"
LINE_BLOCK_BYTES = 8 << 20  # a reading task yields its lines in tables of about this many bytes
_READ_BYTES = 256 << 10  # small pieces: a cut .gz loses at most this much before the damage


def read_lines(batch: pa.Table, skip_to: str | None = None, kind: str = "jsonl"):
    """A table of uris -> each file's non-blank lines (raw bytes, each checked to be a JSON
    object; for kind "text", one document per line, decoded with U+FFFD for bytes that are not
    UTF-8), in tables of about LINE_BLOCK_BYTES. A file that turns out corrupt partway (a cut
    .gz, a line that is not a JSON object) fails the run with its name and line, or with
    `skip_to` (--skip-bad-files) ends there: the lines before it are kept and a note naming the
    file, line and reason is written under `skip_to` for the manifest."""
    for uri in batch.column("uri").to_pylist():
        uri = str(uri)
        lines: list[bytes] = []
        numbers: list[int] = []
        size = kept = 0
        try:
            for number, line in _numbered_lines(uri, kind):
                if kind != "text":
                    _check_record(uri, number, line)
                kept += 1
                lines.append(line)
                numbers.append(number)
                size += len(line)
                if size >= LINE_BLOCK_BYTES:
                    yield _line_block(uri, lines, numbers, kind)
                    lines, numbers, size = [], [], 0
        except UserError as e:
            note_skipped(skip_to, uri, kept, e)
        if lines:
            yield _line_block(uri, lines, numbers, kind)


def note_skipped(skip_to: str | None, uri: str, kept: int, error: UserError) -> None:
    """A file found corrupt partway: without --skip-bad-files (`skip_to` None) the run fails with
    `error`; with it, a note (file, records kept, error) for the manifest, and the reader stops there."""
    if skip_to is None:
        raise error
    storage.write_bytes(storage.join(skip_to, hashlib.sha256(uri.encode()).hexdigest()[:16] + ".json"),
                        json.dumps({"file": uri, "records_kept": kept, "error": str(error)}).encode())


def _numbered_lines(uri: str, kind: str = "jsonl"):
    """(line number, line) of every non-blank line, read in pieces (memory: a piece plus the
    longest line); a read error names the file and the last line read whole."""
    fs, path = storage.filesystem(uri)
    number, rest = 0, b""
    try:
        with fs.open_input_stream(path) as raw:  # .gz is decompressed from the extension
            while True:
                data = raw.read(_READ_BYTES)
                parts = (rest + data).split(b"\n")
                rest = parts.pop() if data else b""
                for line in parts:
                    number += 1
                    if line.strip():
                        yield number, line
                if not data:
                    return
    except OSError as e:  # a truncated or corrupt .gz, a vanished file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--corpus {uri}: unreadable or corrupt {kind} file after line {number} ({reason})") from None


def _load(line: bytes) -> Any:
    """One JSON record; bytes that are not UTF-8 inside it (a crawl's mixed encodings) become
    U+FFFD, which the broken_encoding filter then counts, rather than failing the file."""
    try:
        return json.loads(line, strict=False)  # bytes: UTF-8/16/32 and a BOM detected
    except UnicodeDecodeError:
        return json.loads(line.decode("utf-8", "replace"), strict=False)


def _check_record(uri: str, number: int, line: bytes) -> None:
    try:
        record = _load(line)
    except ValueError as e:
        raise UserError(f"--corpus {uri}: line {number} is not a JSON record ({str(e).splitlines()[0]})") from None
    if not isinstance(record, dict):
        raise UserError(f"--corpus {uri}: line {number} is a JSON {type(record).__name__}, "
                        "not an object (records must be JSON objects)")


def _line_block(uri: str, lines: list[bytes], numbers: list[int], kind: str = "jsonl") -> pa.Table:
    if kind == "text":
        texts = [line.decode("utf-8", "replace").rstrip("\r").lstrip("\ufeff") for line in lines]
        column = {"text": pa.array(texts, pa.string())}
    else:
        column = {LINE: pa.array(lines, pa.binary())}
    return pa.table({**column, LINE_NO: pa.array(numbers, pa.int64()), "path": pa.array([uri] * len(lines), pa.string())})


def parsed(batch: pa.Table) -> dict[str, list]:
    """Raw JSON lines (checked by the reader) -> columns: the union of the records' fields, None
    where a record lacks one."""
    records = [_load(line) for line in batch.column(LINE).to_pylist()]
    names = list(dict.fromkeys(k for r in records for k in r))
    return {name: [r.get(name) for r in records] for name in names}
