"""Stage 1 of the pipeline: corpus URIs -> a streaming Ray Dataset of documents.

Output columns: `doc_id` (source + content hash: stable across runs and machines), `source`
(the corpus's file or folder name, carried to every output), `text`. Records with question /
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
from cola_ray.stages import runner
from cola_ray.stages.base import FunctionStage

OUTPUT_COLUMNS = ("doc_id", "source", "text")
# file suffix -> reader kind; `.arrow` files come from datasets' save_to_disk folders.
FORMATS = {
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json",
    ".parquet": "parquet", ".txt": "text", ".txt.gz": "text", ".arrow": "arrow",
}
_HF_MARKERS = ("dataset_info.json", "state.json")
FIRST_RECORD_MAX = 256 << 20  # the longest first line validation reads (longer ones: read by Ray alone)


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
        head = raw.read(1 << 20)
        # a JSON-lines file's first record may be one long line (a book, a code file): read to its end
        while f.kind == "jsonl" and b"\n" not in head.lstrip() and len(head) < FIRST_RECORD_MAX:
            more = raw.read(1 << 22)
            if not more:
                break
            head += more
    text = head.decode("utf-8", errors="strict" if len(head) < (1 << 20) else "ignore")
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
             qa_first: Collection[str] = (), flag: str = "--corpus ") -> None:
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
        fmt = (formatters or {}).get(f.source)
        qa = fmt is not None and (f.source in qa_first or text_field not in first) and fmt.mentions_qa(list(first))
        try:
            qa = qa and fmt.check_columns(list(first))
        except UserError as e:
            raise UserError(f"{flag}{f.uri}: {e}") from None
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
    with a reasoning section) when the text field is absent, or always with `qa_first`."""

    def __init__(self, source: str, text_field: str, formatter: Any = None, qa_first: bool = False,
                 fraction: float = 1.0):
        self.source, self.text_field = source, text_field
        self.formatter, self.qa_first = formatter, qa_first
        self.fraction = fraction  # the candidate budget's share of this source (1: every document)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else ["?"]
        if self.formatter is not None and (self.qa_first or self.text_field not in batch.column_names):
            texts = self.formatter.format_batch(batch.drop_columns(
                [c for c in ("path",) if c in batch.column_names]).to_pydict())
        elif self.text_field not in batch.column_names:
            raise UserError(f"--corpus {paths[0]}: a record has no field {self.text_field!r}")
        else:
            texts = [t if isinstance(t, str) else ("" if t is None else str(t))
                     for t in batch.column(self.text_field).to_pylist()]
        table = pa.table({
            "doc_id": [doc_id(self.source, t) for t in texts],
            "source": pa.array([self.source] * len(texts), pa.string()),
            "text": pa.array(texts, pa.string()),
        })
        if self.fraction < 1.0:  # before tokenization: the model only ever sees the budget
            table = table.filter(pa.array(in_budget(table.column("doc_id").to_pylist(), self.fraction)))
        return table


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


def _read(kind: str, uris: list[str]):
    import ray

    fs, _ = storage.filesystem(uris[0])
    paths = [storage.filesystem(u)[1] for u in uris]
    common = dict(filesystem=fs, file_extensions=None, include_paths=True)
    if kind in ("jsonl", "json"):
        return ray.data.read_json(paths, **common)  # pyarrow reads JSON lines natively
    if kind == "parquet":
        return ray.data.read_parquet(paths, **common)
    if kind == "text":
        return ray.data.read_text(paths, **common)
    return runner.run(ray.data.from_items([{"uri": u} for u in uris]), FunctionStage(_read_arrow_stream, batch_size=1))


def count_documents(files: list[CorpusFile]) -> dict[str, int]:
    """Records per source (what a candidate budget is split by): one read of the raw records,
    without labelling or hashing them (parquet: from the file metadata)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in files:
        groups.setdefault((f.source, f.kind), []).append(f.uri)
    counts: dict[str, int] = {}
    for (source, kind), uris in groups.items():
        counts[source] = counts.get(source, 0) + _read(kind, uris).count()
    return dict(sorted(counts.items()))


def read_documents(files: list[CorpusFile], text_field: str, first_docs: int | None = None,
                   formatters: Mapping[str, Any] | None = None, qa_first: Collection[str] = (),
                   fractions: Mapping[str, float] | None = None):
    """One streaming Ray Dataset of documents for all corpora; first_docs (the first N in file
    order) applies per source; `fractions`: source -> the candidate budget's share of it.
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
            label = LabelDocuments(source, text_field, (formatters or {}).get(source), source in qa_first, share)
        ds = runner.run(_read(kind, uris), FunctionStage(label))
        per_source.setdefault(source, []).append(ds)
    datasets = []
    for parts in per_source.values():
        ds = _union(parts)
        datasets.append(ds.limit(first_docs) if first_docs else ds)
    return _union(datasets)


def _union(parts: list):
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
