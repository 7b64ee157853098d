"""Near-duplicate removal with MinHash LSH (COLA stage 2, on top of exact dedup).

A calibration set has one sample per activation cluster; two near-identical documents (a
mirrored page, a lightly edited copy) waste a cluster and tilt the centroids toward whatever
is copied most. Exact hashing misses them, so we compare word n-gram sets by their MinHash
estimate of Jaccard similarity.

The pieces are pure functions so that the same maths runs in one process or on Ray:

1. :func:`minhash_signatures` per batch (``map_batches``): ``(n, num_perm)`` uint64.
2. :func:`lsh_band_keys`: one 64-bit key per LSH band; rows that share any key are candidate
   duplicates. Shuffle / group rows by key.
3. :func:`verify_pairs` over each bucket's candidate pairs: those whose estimated Jaccard
   reaches the threshold (this also discards 64-bit key collisions).
4. :func:`drop_from_pairs` once over all pairs (they are few): within each connected group of
   near-duplicates the smallest id is kept, so the result does not depend on row order, on
   bucket order or on the number of workers.

Resolving groups from the gathered pairs, rather than taking the union of per-bucket drops,
matters for chains: if A~C and B~C are found in different buckets but A and B are not alike,
only a global view sees that {A, B, C} is one group (the tests check this path against an
in-memory reference built on datasketch's :class:`MinHashLSH`: tests/stages/neardup_reference.py).
:func:`band_rows`, :func:`bucket_candidates`, :func:`verify_pairs` and :func:`drop_reasons` (at
the end) are the same steps shaped for a Ray Data plan: map_batches (signatures to files, band
keys to the shuffle) -> groupby bucket -> map_groups (candidate pairs of ids) -> driver (the
candidates' signatures read back, pairs verified, groups resolved). Only ids cross the shuffle.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
from datasketch import MinHash, MinHashLSH

from cola_ray.errors import UserError
from cola_ray.hashing import id_keys

_SCHEME = "affine64"  # uint64 hash values; unbiased on large sets (datasketch >= 2.0)
_WORD = re.compile(r"\w+")


def shingles(text: str, ngram: int) -> set[bytes]:
    """The set of lower-cased word n-grams of a text (a shorter text is one shingle).

    Words are runs of letters, digits and underscore, so punctuation and whitespace changes
    alone never make two texts differ.
    """
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)}


@lru_cache(maxsize=8)
def _template(num_perm: int, seed: int) -> MinHash:
    return MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME)


def minhash_signatures(texts: Iterable[str], num_perm: int = 128, ngram: int = 5,
                       seed: int = 1) -> np.ndarray:
    """MinHash signatures of the texts' word ``ngram`` shingle sets, shape ``(n, num_perm)``.

    Deterministic for a given ``(num_perm, ngram, seed)``: signatures computed on different
    workers are comparable. An empty text has the all-max signature (the empty set).
    """
    if num_perm < 1 or ngram < 1:
        raise UserError(f"near-dup num_perm and ngram must be >= 1, got {num_perm} and {ngram}")
    template = _template(num_perm, seed)
    rows = []
    for text in texts:
        m = template.copy()
        m.update_batch(shingles(str(text), ngram))
        rows.append(m.hashvalues)
    if not rows:
        return np.empty((0, num_perm), dtype=np.uint64)
    return np.stack(rows).astype(np.uint64, copy=False)


@lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` that datasketch's MinHashLSH picks for this threshold (equal weights
    on false positives and false negatives), so both dedup paths band identically."""
    _check_threshold(threshold)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: spreads every input bit over the whole 64-bit key."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def lsh_band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 bucket key per (text, band): shape ``(n, bands)``.

    Band ``b`` covers signature columns ``[b*rows, (b+1)*rows)``; the band index is mixed into
    the key, so equal keys mean "same band, same values" (up to 64-bit collisions, which
    :func:`verify_pairs` weeds out by comparing signatures).
    """
    sig = np.asarray(signatures, dtype=np.uint64)
    if sig.ndim != 2 or bands * rows > sig.shape[1] or bands < 1 or rows < 1:
        raise UserError(f"LSH bands x rows = {bands} x {rows} does not fit signatures of shape "
                        f"{sig.shape}")
    with np.errstate(over="ignore"):
        key = np.broadcast_to(np.arange(bands, dtype=np.uint64), (sig.shape[0], bands)).copy()
        banded = sig[:, :bands * rows].reshape(sig.shape[0], bands, rows)
        for j in range(rows):
            key = _mix64((key * np.uint64(0x9E3779B97F4A7C15)) ^ banded[:, :, j])
    return key


def drop_from_pairs(pairs: Iterable[tuple[Hashable, Hashable]]) -> set[Any]:
    """Ids to drop: in each connected group of near-duplicate pairs all but the smallest id."""
    parent: dict[Any, Any] = {}

    def root(x: Any) -> Any:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:  # the smaller id becomes the root, so each root is its group's minimum
            parent[max(ra, rb)] = min(ra, rb)
    return {x for x in parent if root(x) != x}


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise UserError(f"near-dup threshold must be in (0, 1], got {threshold}")


def _plain_ids(ids: Sequence[Hashable]) -> list[Any]:
    """numpy scalars -> Python values, so ids compare and hash like the caller's."""
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    return [i.item() if isinstance(i, np.generic) else i for i in ids]


# -- Ray Data adapters: the same steps over a streaming dataset of documents ----------------

PAIR_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string())])
SIGNATURE_FILE = "sig-{}.parquet"


def band_rows(batch: pa.Table, threshold: float, folder: str, num_perm: int = 128, ngram: int = 5,
              seed: int = 1) -> pa.Table:
    """Documents (`doc_id`, `text`, `key`: exact-duplicate key; optional `documents`: how many
    corpus documents each row stands for, see workflows/processing.py) -> one row per (document,
    LSH band): `bucket`, `id`, `documents` (the batch's document count on its first row, 0 on the
    others); steps 1-2, per batch. A row with an empty `doc_id` only carries a count. The
    signatures themselves (with the keys) go to one parquet file under `folder`, not into the
    shuffle: a signature is num_perm x 8 bytes (1 KB) and the shuffle would carry it once per
    band; only the few candidates' are read back."""
    import hashlib

    from cola_ray import storage

    all_ids = batch.column("doc_id").to_pylist()
    total = sum(batch.column("documents").to_pylist()) if "documents" in batch.column_names else len(all_ids)
    live = [i for i, d in enumerate(all_ids) if d]
    ids = [all_ids[i] for i in live]
    if not ids:  # nothing to band: one row carries the batch's count
        return pa.table({"bucket": pa.array([0], pa.uint64()), "id": [""], "documents": pa.array([total], pa.int64())})
    texts = batch.column("text").to_pylist()
    sigs = minhash_signatures([texts[i] for i in live], num_perm, ngram, seed)
    name = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:20]  # a retried batch rewrites its file
    storage.write_parquet(storage.join(folder, SIGNATURE_FILE.format(name)), pa.table({
        "id": pa.array(ids, pa.string()), "key": batch.column("key").take(live),
        "signature": pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel(), pa.uint64()), num_perm)}))
    bands, rows = lsh_params(threshold, num_perm)
    keys = lsh_band_keys(sigs, bands, rows)
    counts = np.zeros(keys.size, np.int64)
    counts[0] = total
    return pa.table({"bucket": pa.array(keys.ravel(), pa.uint64()),
                     "id": pa.array(np.repeat(np.asarray(ids, dtype=object), bands).tolist(), pa.string()),
                     "documents": pa.array(counts, pa.int64())})


def bucket_candidates(group: pa.Table) -> pa.Table:
    """One LSH bucket (a Ray Data group) -> every pair of distinct ids in it (a < b): the
    candidates that step 3 verifies."""
    ids = sorted(set(group.column("id").to_pylist()) - {""})  # "": a row that only carries a count
    if len(ids) < 2:
        return PAIR_SCHEMA.empty_table()
    a, b = np.triu_indices(len(ids), 1)
    arr = np.asarray(ids, dtype=object)
    return pa.table({"a": arr[a].tolist(), "b": arr[b].tolist()}, schema=PAIR_SCHEMA)


def verify_pairs(pairs: Iterable[tuple[str, str]], signatures: pa.Table, threshold: float,
                 block: int = 4096) -> list[tuple[str, str, bool]]:
    """Step 3 over candidate pairs: (a, b, exact) of those whose estimated Jaccard reaches
    `threshold`, from a table of `id`, `key`, `signature` (the candidates' rows; a repeated id
    has one signature); `exact`: both documents have the same exact-duplicate key."""
    _check_threshold(threshold)
    pairs = sorted(set(pairs))
    if not pairs:
        return []
    ids = signatures.column("id").to_pylist()
    row = {i: r for r, i in reversed(list(enumerate(ids)))}  # the first row of a repeated id
    col = signatures.column("signature").combine_chunks()
    sig = col.values.to_numpy().reshape(-1, col.type.list_size)
    keys = signatures.column("key").to_pylist()
    out = []
    for start in range(0, len(pairs), block):
        part = pairs[start:start + block]
        ra = np.fromiter((row[a] for a, _ in part), np.int64, len(part))
        rb = np.fromiter((row[b] for _, b in part), np.int64, len(part))
        hit = (sig[ra] == sig[rb]).mean(axis=1) >= threshold
        out += [(a, b, keys[i] == keys[j]) for (a, b), i, j, h in zip(part, ra, rb, hit) if h]
    return out


def drop_reasons(pairs: Iterable[tuple[Any, Any, bool]]) -> dict[Any, str]:
    """Step 4 with a reason per dropped id: 'duplicate' when the document is an exact copy of a
    smaller id (what exact dedup alone would drop), else 'near_duplicate'."""
    pairs = list(pairs)
    exact = {b for _, b, same in pairs if same}
    return {i: "duplicate" if i in exact else "near_duplicate"
            for i in sorted(drop_from_pairs((a, b) for a, b, _ in pairs))}


class Verdicts:
    """The pre-pass's verdicts (doc_id -> 'duplicate' | 'near_duplicate') as two sorted numpy
    arrays, a 64-bit hash of each dropped id and its reason code: what every chunking task gets.
    A dict of millions of ids would be rebuilt object by object in every task; these arrays are
    one memory copy (16 bytes a dropped document). A 64-bit hash collision (odds about n^2 / 2^65,
    1 in 3,000 at 100M documents) would drop one more document, never keep a duplicate."""

    REASONS = ("duplicate", "near_duplicate")

    def __init__(self, drops: Mapping[str, str]):
        hashes = id_keys(list(drops), 0, "verdict")
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.codes = np.asarray([self.REASONS.index(r) for r in drops.values()], np.uint8)[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def get(self, doc_id: str, default: str = "") -> str:
        if not len(self.hashes):
            return default
        h = id_keys([doc_id], 0, "verdict")[0]
        j = int(np.searchsorted(self.hashes, h))
        return self.REASONS[self.codes[j]] if j < len(self.hashes) and self.hashes[j] == h else default

