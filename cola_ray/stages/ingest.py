"""Stage 1 of the pipeline: corpus URIs -> a streaming Ray Dataset of documents.

Output columns (DOCUMENT_SCHEMA): `doc_id` (source + content hash: stable across runs and
machines), `source` (the corpus's file or folder name, carried to every output), `text`,
`invalid` (a drop reason found while reading) and `messages` (a conversation's turns). Records with question /
answer structure become one text through a Q&A renderer that the workflow passes in (stage 2's
formatting; ingest only calls it, so the stages stay independent).
Every file is checked before anything heavy starts, so a bad corpus fails in seconds with the
file and field named rather than deep inside a Ray task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from cola_ray import storage
from cola_ray.errors import UserError
from cola_ray.stages import chat, hub, lines, parquet, runner
from cola_ray.stages.base import FunctionStage

# file suffix -> reader kind; `.arrow` files come from datasets' save_to_disk folders.
FORMATS = {
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json",
    ".parquet": "parquet", ".txt": "text", ".txt.gz": "text", ".arrow": "arrow",
}
_HF_MARKERS = ("dataset_info.json", "state.json")
FIRST_RECORD_MAX = 256 << 20  # the longest first line validation reads (longer ones: read by Ray alone)
HEAD_BYTES = 64 << 10  # what validation reads of a file when its first record is shorter


@dataclass(frozen=True)
class CorpusFile:
    uri: str
    source: str
    kind: str


def _kind(uri: str) -> str | None:
    name = uri.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    return None


def source_label(corpus_uri: str) -> str:
    """'data/news.jsonl' -> 'news'; 'data/wiki/' -> 'wiki'; 'data/*.parquet' -> 'data'."""
    name = corpus_uri.rstrip("/")
    if any(ch in name for ch in "*?["):
        name = name.split("*")[0].split("?")[0].split("[")[0].rstrip("/")
        return storage.basename(name) or "corpus"
    base = storage.basename(name)
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def discover(corpus_uris: list[str], flag: str = "--corpus ") -> list[CorpusFile]:
    """Expand each --corpus into readable files labelled with the corpus's source name (`flag`
    names the option in messages: '--corpus ', '--probes code=')."""
    if not corpus_uris:
        raise UserError(f"{flag.strip()}: no corpus given")
    found: list[CorpusFile] = []
    for uri in corpus_uris:
        if hub.is_hub(uri):  # a Hugging Face dataset by name: datasets finds its files
            source, uris = hub.data_files(uri, flag)
            files = [CorpusFile(u, source, kind) for u in uris if (kind := _kind(u)) and kind != "arrow"]
            if not files:
                raise UserError(f"{flag}{uri}: none of its {len(uris)} file(s) is in a format cola-ray reads "
                                f"({', '.join(sorted(FORMATS))})")
            found.extend(files)
            continue
        source = source_label(uri)
        matches = storage.expand(uri)
        names = {storage.basename(m.uri) for m in matches}
        is_hf = all(marker in names for marker in _HF_MARKERS)
        files = [
            CorpusFile(m.uri, source, kind)
            for m in matches
            if (kind := _kind(m.uri)) and (kind == "arrow") == is_hf
        ]
        if not files:
            raise UserError(f"{flag}{uri}: matches no readable files "
                            f"(expected {', '.join(sorted(FORMATS))} or a datasets save_to_disk folder)")
        found.extend(files)
    return found


def _first_record(f: CorpusFile) -> dict | None:
    """Parse the first record of a file (cheap) to catch corrupt files and missing fields early."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(f.uri)
    if f.kind == "parquet":
        schema = pq.read_schema(fs.open_input_file(path))
        return {name: "" for name in schema.names}
    if f.kind == "arrow":
        reader = ipc.open_stream(fs.open_input_stream(path))
        return {name: "" for name in reader.schema.names}
    with fs.open_input_stream(path) as raw:  # pyarrow decompresses .gz from the extension
        head = raw.read(HEAD_BYTES)  # small: a .gz cut later in the file is the reader's to find
        complete = len(head) < HEAD_BYTES
        # a JSON-lines file's first record may be one long line (a book, a code file): read to its end
        while b"\n" not in head.lstrip() and not complete and len(head) < FIRST_RECORD_MAX:
            more = raw.read(1 << 22)
            complete = not more
            head += more
    body = head.lstrip()  # the first record (line) only: later lines are the reader's to check
    whole = b"\n" in body or complete  # else a first line beyond FIRST_RECORD_MAX, cut
    text = (body[: body.find(b"\n")] if b"\n" in body else body).decode("utf-8-sig", "strict" if whole else "ignore")
    if f.kind == "text":
        return {"text": text}
    stripped = text.lstrip()
    if not stripped:
        return None
    if f.kind == "json" and stripped.startswith("["):
        return {}  # a JSON array: field checks happen while reading
    first = json.loads(stripped.splitlines()[0])
    if not isinstance(first, dict):
        raise ValueError("records must be JSON objects")
    return first


def validate(files: list[CorpusFile], text_field: str, formatters: Mapping[str, Any] | None = None,
             qa_first: Collection[str] = (), flag: str = "--corpus ", renderer: Any = None) -> None:
    """Check every file's first record. `formatters`: source -> Q&A renderer (with
    `check_columns(names) -> bool`); a source's records render as Q&A when its text field is
    absent, or always when the source is in `qa_first` (records without Q&A fields still pass
    their text through). `flag` names the option in messages."""
    from concurrent.futures import ThreadPoolExecutor

    def check(f: CorpusFile) -> None:
        try:
            first = _first_record(f)
        except Exception as e:  # noqa: BLE001 - any parse failure means unreadable
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{flag}{f.uri}: unreadable or corrupt {f.kind} file ({reason})") from None
        if not first or f.kind == "text":
            return
        field = chat.conversation_field(first) if renderer is not None else None
        if field:
            return renderer.check(f.uri, field)
        fmt = (formatters or {}).get(f.source)
        qa = fmt is not None and (f.source in qa_first or text_field not in first) and fmt.mentions_qa(list(first))
        try:
            qa = qa and fmt.check_columns(list(first))
        except UserError as e:
            raise UserError(f"{flag}{f.uri}: {e}") from None
        if qa and renderer is not None and renderer.qa:
            renderer.check(f.uri, "Q&A")
        if not qa and text_field not in first:
            raise UserError(f"{flag}{f.uri}: no field {text_field!r} (has: "
                            f"{', '.join(sorted(first)[:8])}); set --text-field")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(check, files))


def doc_id(source: str, text: str) -> str:
    return f"{source}:{hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:16]}"


class LabelDocuments:
    """Select the text field, attach source and stable id (Ray Data `include_paths` gives each
    row its file, so errors name the file). With a `formatter`, records render through it (Q&A
    with a reasoning section) when the text field is absent, or always with `qa_first`. With a
    `chat` renderer, conversation records (chat.py) render through the model's chat template,
    one document per part of a long conversation, with the part's turns in `messages`."""

    def __init__(self, source: str, text_field: str, formatter: Any = None, qa_first: bool = False,
                 fraction: float = 1.0, chat: Any = None):
        self.source, self.text_field = source, text_field
        self.formatter, self.qa_first = formatter, qa_first
        self.fraction = fraction  # the candidate budget's share of this source (1: every document)
        self.chat = chat

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else ["?"]
        columns = lines.parsed(batch) if lines.LINE in batch.column_names else batch.drop_columns(
            [c for c in ("path", lines.LINE_NO) if c in batch.column_names]).to_pydict()
        n = len(next(iter(columns.values()), []))
        turns: list = [None] * n
        kinds: list = [None] * n  # how each record's turns are written: a conversation field, or "qa"
        for conv in (f for f in chat.FIELDS if f in columns) if self.chat is not None else ():
            for i, value in enumerate(columns[conv]):  # per record: files may mix the two styles
                if turns[i] is None and value is not None:
                    turns[i], kinds[i] = value, conv
        plain = [i for i, t in enumerate(turns) if t is None]  # the records that are not conversations
        texts: list = [None] * n
        if plain:
            if len(plain) < n:
                columns = {name: [values[i] for i in plain] for name, values in columns.items()}
            qa_turns = (self.formatter.turns_batch(columns) if self.formatter is not None and self.chat is not None
                        and self.chat.qa and (self.qa_first or self.text_field not in columns) else [None] * len(plain))
            # a batch that is all Q&A-as-chat needs no Q&A-template rendering as well
            plain_texts = (self._texts(columns, paths[0]) if any(e is None for e in qa_turns)
                           else [None] * len(plain))
            for i, t, exchange in zip(plain, plain_texts, qa_turns):
                texts[i] = t
                if exchange is not None:  # a Q&A record rendered by the chat template (--qa-chat)
                    turns[i], kinds[i] = exchange, "qa"
        rows: dict[str, list] = {name: [] for name in DOCUMENT_SCHEMA.names}

        def add(doc: str, text: str, invalid: str = "", messages: str | None = None) -> None:
            for name, value in zip(DOCUMENT_SCHEMA.names, (doc, self.source, text, invalid, messages)):
                rows[name].append(value)

        for i, (t, value, kind) in enumerate(zip(texts, turns, kinds)):
            if value is not None:  # a conversation record: rendered, or a counted bad_conversation
                self._conversation(value, kind, add, paths[min(i, len(paths) - 1)])
            elif isinstance(t, str):
                add(doc_id(self.source, t), t)
            elif t is None:  # missing or null: an empty document
                add(doc_id(self.source, ""), "")
            else:  # a number, list or object (or a non-string column): dropped as not_string; the id
                # hashes the value, so distinct values stay distinct documents
                add(doc_id(self.source, json.dumps(t, sort_keys=True, default=str)), "", "not_string")
        rows["text"] = _strings(rows["text"])
        table = pa.table(rows, schema=DOCUMENT_SCHEMA)
        if self.fraction < 1.0:  # before tokenization: the model only ever sees the budget
            table = table.filter(pa.array(in_budget(table.column("doc_id").to_pylist(), self.fraction)))
        return table

    def _texts(self, columns: dict[str, list], path: str) -> list:
        if self.formatter is not None and (self.qa_first or self.text_field not in columns):
            return self.formatter.format_batch(columns)
        if self.text_field in columns:
            return columns[self.text_field]
        raise UserError(f"--corpus {path}: a record has no field {self.text_field!r}")

    def _conversation(self, value: Any, field: str, add, path: str) -> None:
        try:
            parts = self.chat.parts(value if field == "qa" else chat.parse(value, field))
        except chat.BadConversation as bad:
            if self.chat.strict:
                raise UserError(f"--corpus {path}: a malformed conversation record: {bad} (--strict)") from None
            return add(doc_id(self.source, json.dumps(value, sort_keys=True, default=str)), "", bad.reason)
        for text, part in parts:
            add(doc_id(self.source, text), text, "", json.dumps(part, ensure_ascii=False))


# Documents: `invalid` is a drop reason decided while reading (not_string, bad_conversation:<why>),
# `messages` the turns (JSON) a conversation document was rendered from.
DOCUMENT_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string()),
                             ("invalid", pa.string()), ("messages", pa.string())])


def _strings(texts: list) -> pa.Array:
    """pyarrow refuses a str holding a lone surrogate (JSON allows the escape "\\ud800"):
    replace those characters rather than fail the batch."""
    try:
        return pa.array(texts, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([t if t is None else t.encode("utf-8", "replace").decode("utf-8") for t in texts],
                        pa.string())


def _is_json_array(uri: str) -> bool:
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as raw:
        head = raw.read(4096)
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["


def in_budget(ids: list[str], fraction: float):
    """The candidate budget's sample: a hash threshold on the document id, independent of --seed
    (every seed of a sweep shares one pool) and of file order, sharding and workers."""
    from cola_ray.hashing import in_sample

    return in_sample(ids, fraction, 0, "candidate-budget")


def _read_arrow_stream(batch: pa.Table) -> pa.Table:
    """datasets' save_to_disk writes Arrow IPC *stream* files, which Ray has no reader for."""
    import pyarrow.ipc as ipc

    tables = []
    for uri in batch.column("uri").to_pylist():
        fs, path = storage.filesystem(str(uri))
        with fs.open_input_stream(path) as f:
            table = ipc.open_stream(f).read_all()
        tables.append(table.append_column("path", pa.array([str(uri)] * table.num_rows, pa.string())))
    return pa.concat_tables(tables)


def _read(kind: str, uris: list[str], skip_to: str | None = None):
    import ray

    fs, _ = storage.filesystem(uris[0])
    paths = [storage.filesystem(u)[1] for u in uris]
    common = dict(filesystem=fs, file_extensions=None, include_paths=True)
    if kind == "json" and all(map(_is_json_array, uris)):  # whole-file JSON arrays: pyarrow's reader
        return ray.data.read_json(paths, **common)
    if kind in ("jsonl", "json"):
        return _per_file(uris, lines.read_lines, skip_to=skip_to)
    if kind == "parquet":  # row group by row group, so that damage partway is named (stages/parquet.py)
        return _per_file(uris, parquet.read_parquet, skip_to=skip_to)
    if kind == "text":  # the same line reader: a stray non-UTF-8 byte is one U+FFFD, not a failed file
        return _per_file(uris, lines.read_lines, skip_to=skip_to, kind="text")
    return _per_file(uris, _read_arrow_stream)


def _per_file(uris: list[str], reader, **kwargs):
    """One reading task per file (`reader`: a table of uris -> the file's rows)."""
    import ray

    files = ray.data.from_items([{"uri": u} for u in uris], override_num_blocks=len(uris))
    return runner.run(files, FunctionStage(reader, batch_size=1, kwargs=kwargs))


def count_documents(files: list[CorpusFile], skip_to: str | None = None) -> dict[str, int]:
    """Records per source (what a candidate budget is split by): one read of the raw records,
    without labelling or hashing them (parquet: from the file metadata)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in files:
        groups.setdefault((f.source, f.kind), []).append(f.uri)
    counts: dict[str, int] = {}
    for (source, kind), uris in groups.items():
        n = parquet.count_records(uris) if kind == "parquet" else _read(kind, uris, skip_to).count()
        counts[source] = counts.get(source, 0) + n
    return dict(sorted(counts.items()))


def read_documents(files: list[CorpusFile], text_field: str, first_docs: int | None = None,
                   formatters: Mapping[str, Any] | None = None, qa_first: Collection[str] = (),
                   fractions: Mapping[str, float] | None = None, skip_to: str | None = None,
                   renderer: Any = None):
    """One streaming Ray Dataset of documents for all corpora; first_docs (the first N in file
    order) applies per source; `fractions`: source -> the candidate budget's share of it;
    `skip_to`: with --skip-bad-files, where notes on JSON-lines files found corrupt partway go
    (see lines.read_lines; without it such a file fails the run); `renderer`: a
    chat.ChatRenderer for conversation records (None: they are not recognised).
    `formatters` and `qa_first` as in :func:`validate` (plain .txt files never render as Q&A)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in files:
        groups.setdefault((f.source, f.kind), []).append(f.uri)
    per_source: dict[str, list] = {}
    for (source, kind), uris in groups.items():
        share = (fractions or {}).get(source, 1.0)
        if kind == "text":
            label = LabelDocuments(source, "text", fraction=share)
        else:
            label = LabelDocuments(source, text_field, (formatters or {}).get(source), source in qa_first, share,
                                   renderer)
        ds = runner.run(_read(kind, uris, skip_to), FunctionStage(label))
        per_source.setdefault(source, []).append(ds)
    datasets = []
    for parts in per_source.values():
        ds = _union(parts)
        datasets.append(ds.limit(first_docs) if first_docs else ds)
    return _union(datasets)


def _union(parts: list):
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def skipped_files(skip_to: str) -> list[dict]:
    """The notes --skip-bad-files left under `skip_to` (file, records kept, error), by file."""
    return sorted((json.loads(storage.read_bytes(u)) for u in storage.list_files(skip_to, ".json")),
                  key=lambda n: n["file"])
