"""`lexical`: model-free selection for lexical diversity, in the spirit of ZipCal.

ZipCal (arXiv 2603.16105) selects calibration data without running the model, maximising lexical
diversity with Zipf's law in mind. We have the idea, not the authors' code; this is our own
design from it, stated fully so it can be judged:

- Word types: lower-cased runs of letters/digits/underscore (identifiers count as words, which
  suits code), plus each non-space punctuation character. No tokenizer, no model.
- Why plain random sampling is lexically poor: word frequencies are Zipfian, so most tokens of a
  random sample repeat the few head types, and the long tail is covered by luck (Heaps' law:
  distinct types grow only as a power < 1 of sampled tokens).
- Objective, over a set S of chunks:  F(S) = sum over word types t present in S of w_t,
  w_t = log(1 + f_t), f_t = occurrences of t in the whole pool. Each type counts once however
  often S repeats it (a repeat adds nothing: copies and boilerplate cannot win twice), and a
  type weighs more the more frequent it is in the pool, so the Zipf head and body (types that
  deployment text will actually contain) count more than one-off hapaxes (typos, numbers, rare
  identifiers: about half of all types under Zipf's law), but only logarithmically, so the few
  head types cannot dominate. A weighted coverage function: monotone submodular, and greedy
  selection is within (1 - 1/e) of the optimum.
- Greedy with lazy evaluation (marginal gains only shrink, so a stale gain is an upper bound),
  ties broken by id: deterministic, independent of pool order, and seed-free (the seed does not
  enter: the same pool gives the same set for every seed).

Score (`distance`): the chunk's marginal gain in F when it was picked (non-increasing with rank).
Cost: one pass over the pool's text on the driver (seconds for thousands of chunks); no model.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter

from cola_ray.selectors.registry import Pool, SelectorContext, ranked, register_selector

_WORD = re.compile(r"[^\W_]+|_+[^\W_]*|[^\w\s]", re.UNICODE)


def word_types(text: str) -> Counter:
    """Occurrences of each word type in `text` (words lower-cased, punctuation one char each)."""
    return Counter(m.group(0).lower() for m in _WORD.finditer(text))


def zipf_weights(docs: list[Counter]) -> dict[str, float]:
    pool: Counter = Counter()
    for d in docs:
        pool.update(d)
    return {t: math.log1p(n) for t, n in pool.items()}


def greedy_diverse(ids: list[str], docs: list[Counter], k: int) -> tuple[list[int], list[float]]:
    """Lazy greedy maximisation of F(S) = sum of w_t over the types S covers; (chosen indices,
    marginal gains in pick order)."""
    weights = zipf_weights(docs)
    covered: set[str] = set()

    def gain(j: int) -> float:
        return round(sum(weights[t] for t in docs[j] if t not in covered), 9)  # rounded: summation-order noise

    heap = [(-gain(j), ids[j], j) for j in range(len(ids))]
    heapq.heapify(heap)
    chosen, gains = [], []
    while heap and len(chosen) < k:
        _, ident, j = heapq.heappop(heap)
        fresh = gain(j)
        # A stale gain is an upper bound (gains only shrink): pick j if its fresh gain still beats
        # every other bound, ties going to the smaller id; otherwise put it back with the new gain.
        if not heap or (-fresh, ident) <= heap[0][:2]:
            chosen.append(j)
            gains.append(fresh)
            covered.update(docs[j])
        else:
            heapq.heappush(heap, (-fresh, ident, j))
    return chosen, gains


@register_selector("lexical", description="ZipCal-style: greedy lexical diversity, Zipf-weighted word-type "
                   "coverage (model-free)", score="marginal gain in Zipf-weighted word-type coverage when picked",
                   uses_seed=False)
def lexical_select(pool: Pool, k: int, ctx: SelectorContext):
    table = pool.read(["text"])
    ids = table.column("id").to_pylist()
    docs = [word_types(t) for t in table.column("text").to_pylist()]
    chosen, gains = greedy_diverse(ids, docs, k)
    return ranked([ids[j] for j in chosen], [round(g, 4) for g in gains])
