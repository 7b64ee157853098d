"""Stage 2: documents -> token chunks, with every drop counted by reason.

Per document, in order: a reason found while reading (ingest's `invalid`: not_string for a
JSON text field holding a number, list or object; bad_conversation) -> empty -> quality filters (filters.py: too_short, broken_encoding,
non_text, repetitive) -> near-duplicate verdicts found beforehand over the whole corpus
(neardup.py: 'near_duplicate', or 'duplicate' for a copy of an earlier document up to case and
whitespace). A dropped document leaves one row (`doc_id#0`, no tokens) so the ledger counts it.
Survivors are tokenized and split at paragraph/line boundaries into chunks of at most seq_len
tokens; with `pack`, consecutive chunks of one source are concatenated (the tokenizer's EOS
between documents) into sequences of up to seq_len tokens, so short documents make full-length
calibration sequences instead of being dropped as too short.

Output columns (one row per chunk, dropped chunks included so counts survive to the ledger):
`id` (doc_id#index; a packed sequence takes its first piece's id), `doc_id` (of a packed
sequence: its documents' ids, space-separated), `source`, `text`, `input_ids` (int32, without
added special tokens except packing's EOS; a chat template's own are part of the text),
`num_tokens` (0 for a document dropped whole), `dedup_key` (hash of the normalised text),
`drop` ('' = kept, else the reason), `messages` (a conversation chunk's turns, JSON; else null). Exact duplicates
are not decided here (that would need every copy of a key in one place): the pool resolves them
from the ledger after the activation pass (pool.resolve).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from cola_ray.errors import UserError
from cola_ray.stages.filters import FilterConfig, QualityFilter

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("num_tokens", pa.int32()), ("dedup_key", pa.string()),
    ("drop", pa.string()), ("messages", pa.string()),
])
_WS = re.compile(r"\s+")


def dedup_key(text: str) -> str:
    """Exact-duplicate key: case and whitespace differences do not make a chunk new."""
    return hashlib.sha1(_WS.sub(" ", text).strip().lower().encode("utf-8", "replace")).hexdigest()[:20]


def _boundaries(text: str, offsets: list[tuple[int, int]], pattern: str) -> list[int]:
    """Token indices at which a new paragraph / line starts (candidate cut points)."""
    starts = [s for s, _ in offsets]
    cuts = []
    for m in re.finditer(pattern, text):
        i = bisect.bisect_left(starts, m.end())
        if 0 < i < len(offsets):
            cuts.append(i)
    return sorted(set(cuts))


def split_points(n_tokens: int, seq_len: int, paragraphs: list[int], lines: list[int]) -> list[int]:
    """Greedy cut points: each chunk holds at most seq_len tokens and ends at the last paragraph
    boundary in its second half, else the last line boundary in its last three quarters, else
    at seq_len exactly (one very long line)."""
    cuts, start = [], 0
    while n_tokens - start > seq_len:
        limit = start + seq_len
        cut = _last_in(paragraphs, start + seq_len // 2, limit) or _last_in(lines, start + seq_len // 4, limit)
        cut = cut or limit
        cuts.append(cut)
        start = cut
    return cuts + [n_tokens]


def _last_in(sorted_points: list[int], lo: int, hi: int) -> int | None:
    j = bisect.bisect_right(sorted_points, hi) - 1
    return sorted_points[j] if j >= 0 and sorted_points[j] > lo else None


class Chunker:
    """Tokenize with the model's tokenizer and split long documents at paragraph/line boundaries.
    The tokenizer loads once in the constructor; `chunk_batch` keeps one Chunker per worker
    process, so plain Ray tasks (which free their CPU between batches, unlike actors) reuse it.
    `quality`: filter thresholds (None: no quality filtering); `pack`: see the module docstring."""

    def __init__(self, model: str, seq_len: int, min_tokens: int, pack: bool = False,
                 quality: FilterConfig | None = None):
        from cola_ray.models import load_tokenizer

        self.tokenizer = load_tokenizer(model)
        self.seq_len, self.min_tokens, self.pack = seq_len, min_tokens, pack
        self.quality = QualityFilter(quality) if quality is not None else None
        if pack and self.tokenizer.eos_token_id is None:
            raise UserError(f"--pack: the tokenizer of {model} has no EOS token to separate documents")

    def document_drop(self, text: str, doc: str, near_dups: Mapping[str, str], invalid: str | None = "") -> str:
        """Why a whole document is dropped ('' = keep): a reason found while reading, empty, a
        quality reason, or a verdict of the corpus-wide near-duplicate pass."""
        if invalid:
            return invalid
        if not text.strip():
            return "empty"
        reason = self.quality.reason(text) if self.quality is not None else None
        return reason or near_dups.get(doc, "")

    def pieces(self, doc_id: str, text: str, ids: list[int], offsets: list) -> list[dict]:
        """The document's chunks (each at most seq_len tokens), not yet checked for length."""
        cuts = split_points(len(ids), self.seq_len, _boundaries(text, offsets, r"\n\s*\n"),
                            _boundaries(text, offsets, r"\n"))
        rows, start = [], 0
        for i, end in enumerate(cuts):
            rows.append(dict(id=f"{doc_id}#{i}", doc_id=doc_id, input_ids=ids[start:end],
                             text=text[offsets[start][0]: offsets[end - 1][1]]))
            start = end
        return rows

    def packed(self, pieces: list[dict]) -> list[dict]:
        """Greedy in-order packing of one source's pieces into sequences of at most seq_len
        tokens, EOS between documents (consecutive pieces of one document stay contiguous)."""
        eos_id, eos = self.tokenizer.eos_token_id, self.tokenizer.eos_token
        packs: list[list[dict]] = [[]]
        used = 0
        for p in pieces:
            sep = 1 if packs[-1] and packs[-1][-1]["doc_id"] != p["doc_id"] else 0
            if packs[-1] and used + sep + len(p["input_ids"]) > self.seq_len:
                packs.append([])
                used, sep = 0, 0
            packs[-1].append(p)
            used += sep + len(p["input_ids"])
        out = []
        for members in filter(None, packs):
            ids, text = list(members[0]["input_ids"]), members[0]["text"]
            for prev, p in zip(members, members[1:]):
                new_doc = prev["doc_id"] != p["doc_id"]
                ids += ([eos_id] if new_doc else []) + list(p["input_ids"])
                text += (eos if new_doc else "") + p["text"]
            doc_ids = " ".join(dict.fromkeys(p["doc_id"] for p in members))
            out.append(dict(id=members[0]["id"], doc_id=doc_ids, input_ids=ids, text=text, pos=members[0].get("pos")))
        return out

    def _checked(self, row: dict) -> dict:
        """A chunk row with its length check applied: under --min-tokens it is dropped as
        `below_min_tokens` (not the quality filter's `too_short`, which counts characters of a whole
        document) and keeps no payload."""
        n = len(row["input_ids"])
        drop = "below_min_tokens" if n < self.min_tokens else ""
        return dict(row, text="" if drop else row["text"], input_ids=[] if drop else row["input_ids"],
                    num_tokens=n, drop=drop)

    def __call__(self, batch: pa.Table, near_dups: Mapping[str, str] | None = None) -> pa.Table:
        texts = batch.column("text").to_pylist()
        docs, sources = batch.column("doc_id").to_pylist(), batch.column("source").to_pylist()
        invalid, messages = (_optional(batch, name) for name in ("invalid", "messages"))
        drops = [self.document_drop(t, d, near_dups or {}, bad) for t, d, bad in zip(texts, docs, invalid)]
        live = [i for i, d in enumerate(drops) if not d]
        enc = self.tokenizer([texts[i] for i in live], add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, verbose=False) if live else {"input_ids": [], "offset_mapping": []}
        # rows keep the documents' order (a packed sequence sits where its first piece was)
        rows = [dict(_dropped_document(docs[i], d), source=sources[i], pos=(i, 0)) for i, d in enumerate(drops) if d]
        by_source: dict[str, list[dict]] = {}
        for i, ids, offsets in zip(live, enc["input_ids"], enc["offset_mapping"]):
            if not ids:
                rows.append(dict(_dropped_document(docs[i], "empty"), source=sources[i], pos=(i, 0)))
                continue
            by_source.setdefault(sources[i], []).extend(
                dict(p, pos=(i, j), messages=messages[i]) for j, p in enumerate(self.pieces(docs[i], texts[i], ids, offsets)))
        for source, pieces in by_source.items():  # packing never mixes sources
            for row in (self.packed(pieces) if self.pack else pieces):
                rows.append(dict(self._checked(row), source=source))
        out = {name: [] for name in OUTPUT_SCHEMA.names}
        for row in sorted(rows, key=lambda r: r["pos"]):
            row["dedup_key"] = dedup_key(row["text"]) if not row["drop"] else row["id"]
            for name in OUTPUT_SCHEMA.names:
                out[name].append(row.get(name))
        return pa.table(out, schema=OUTPUT_SCHEMA)


def _optional(batch: pa.Table, name: str) -> list:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * batch.num_rows


def _dropped_document(doc_id: str, reason: str) -> dict:
    return dict(id=f"{doc_id}#0", doc_id=doc_id, text="", input_ids=[], num_tokens=0, drop=reason)


@functools.lru_cache(maxsize=4)
def _chunker(model: str, seq_len: int, min_tokens: int, pack: bool, quality: FilterConfig | None) -> Chunker:
    return Chunker(model, seq_len, min_tokens, pack, quality)


def chunk_batch(batch: pa.Table, model: str, seq_len: int, min_tokens: int, pack: bool = False,
                quality: FilterConfig | None = None, near_dups: Mapping[str, str] | None = None) -> pa.Table:
    return _chunker(model, seq_len, min_tokens, pack, quality)(batch, near_dups)


def surviving_documents(batch: pa.Table, quality: FilterConfig | None) -> pa.Table:
    """The documents that pass the quality filters, with the exact-duplicate key of their whole
    text (`doc_id`, `text`, `key`): the input of the corpus-wide near-duplicate pass, which must
    see exactly the documents that chunking will keep."""
    check = QualityFilter(quality) if quality is not None else None
    keep, keys = [], []
    for text, invalid in zip(batch.column("text").to_pylist(), _optional(batch, "invalid")):
        ok = not invalid and bool(text.strip()) and (check is None or check.reason(text) is None)
        keep.append(ok)
        keys.append(dedup_key(text) if ok else "")
    mask = pa.array(keep)
    return pa.table({"doc_id": batch.column("doc_id").filter(mask), "text": batch.column("text").filter(mask),
                     "key": pa.array(keys, pa.string()).filter(mask)})
