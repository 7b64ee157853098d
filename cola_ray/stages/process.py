"""Stage 2: documents -> token chunks, with every drop counted by reason.

Output columns (one row per chunk, dropped chunks included so counts survive to the ledger):
`id` (doc_id#index), `doc_id`, `source`, `text`, `input_ids` (int32, without special tokens),
`num_tokens`, `dedup_key` (hash of the normalised text), `drop` ('' = kept, else the reason).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re

import numpy as np
import pyarrow as pa

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("num_tokens", pa.int32()), ("dedup_key", pa.string()),
    ("drop", pa.string()),
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
    process, so plain Ray tasks (which free their CPU between batches, unlike actors) reuse it."""

    def __init__(self, model: str, seq_len: int, min_tokens: int):
        from cola_ray.models import load_tokenizer

        self.tokenizer = load_tokenizer(model)
        self.seq_len, self.min_tokens = seq_len, min_tokens

    def chunk_document(self, doc_id: str, text: str, ids: list[int], offsets: list) -> list[dict]:
        if not text.strip() or not ids:
            return [dict(id=f"{doc_id}#0", text="", input_ids=[], num_tokens=0, drop="empty")]
        cuts = split_points(len(ids), self.seq_len, _boundaries(text, offsets, r"\n\s*\n"),
                            _boundaries(text, offsets, r"\n"))
        rows, start = [], 0
        for i, end in enumerate(cuts):
            piece = ids[start:end]
            chunk_text = text[offsets[start][0]: offsets[end - 1][1]]
            drop = "too_short" if len(piece) < self.min_tokens else ""
            rows.append(dict(id=f"{doc_id}#{i}", text="" if drop else chunk_text,
                             input_ids=[] if drop else piece, num_tokens=len(piece), drop=drop))
            start = end
        return rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, verbose=False)
        out = {name: [] for name in OUTPUT_SCHEMA.names}
        for doc, source, text, ids, offsets in zip(batch.column("doc_id").to_pylist(),
                                                   batch.column("source").to_pylist(), texts,
                                                   enc["input_ids"], enc["offset_mapping"]):
            for row in self.chunk_document(doc, text, ids, offsets):
                row.update(doc_id=doc, source=source,
                           dedup_key=dedup_key(row["text"]) if not row["drop"] else row["id"])
                for name in OUTPUT_SCHEMA.names:
                    out[name].append(row[name])
        return pa.table(out, schema=OUTPUT_SCHEMA)


@functools.lru_cache(maxsize=4)
def _chunker(model: str, seq_len: int, min_tokens: int) -> Chunker:
    return Chunker(model, seq_len, min_tokens)


def chunk_batch(batch: pa.Table, model: str, seq_len: int, min_tokens: int) -> pa.Table:
    return _chunker(model, seq_len, min_tokens)(batch)


def mark_duplicates(group: pa.Table) -> pa.Table:
    """All rows sharing one dedup_key: keep the smallest id (deterministic whatever the order
    rows arrived in), mark the others 'duplicate' and drop their payload."""
    if group.num_rows == 1:
        return group
    ids = group.column("id").to_pylist()
    drops = group.column("drop").to_pylist()
    live = [i for i, d in enumerate(drops) if not d]
    if len(live) <= 1:
        return group
    keep = min(live, key=lambda i: ids[i])
    new_drop = [d if (d or i == keep) else "duplicate" for i, d in enumerate(drops)]
    dup = np.array([d == "duplicate" for d in new_drop])
    text = pa.array(["" if x else t for x, t in zip(dup, group.column("text").to_pylist())], pa.string())
    toks = pa.array([[] if x else t for x, t in zip(dup, group.column("input_ids").to_pylist())],
                    pa.list_(pa.int32()))
    group = group.set_column(group.schema.get_field_index("drop"), "drop", pa.array(new_drop, pa.string()))
    group = group.set_column(group.schema.get_field_index("text"), "text", text)
    return group.set_column(group.schema.get_field_index("input_ids"), "input_ids", toks)
