"""Quality filters for candidate documents (COLA stage 2: removal of low-quality samples).

A calibration set is tiny (tens to hundreds of sequences), so one garbage sequence is a large
share of the statistics a compressor estimates from it. These heuristics drop text that no
capability benefits from, and say *why*, so every run can report counts per reason:

- ``too_short``: fewer than ``min_chars`` non-whitespace characters.
- ``broken_encoding``: too many U+FFFD replacement characters or UTF-8-read-as-Latin-1/CP1252
  mojibake (``Ã©``, ``â€™``). Checked before ``non_text`` because broken characters also
  inflate the symbol share, and the more specific diagnosis is the useful one.
- ``non_text``: too many symbols (neither alphanumeric, underscore nor whitespace) or digits.
- ``repetitive``: too many characters in repeated lines, or a single word n-gram covering too
  many characters (in the spirit of the Gopher / RefinedWeb repetition filters).

Source code is legitimate calibration text here (code is a capability to preserve), so the
defaults keep ordinary Python source: underscores count as word characters, line repetition is
measured in characters (so short repeated lines such as ``pass`` or ``else:`` weigh little)
and the thresholds were set against the Python standard library and real news prose: with the
defaults all 300 news paragraphs of gensim's Lee corpus and ~98% of the stdlib's 1,073 modules
pass; most of the rest are re-export shims under ``min_chars`` or test modules made of near
identical lines. Pure duplicate text is stage ``neardup``'s job, not this one's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from cola_ray.errors import UserError

#: Drop reasons in the order they are checked; ``reason()`` returns the first that fails.
REASONS: tuple[str, ...] = ("too_short", "broken_encoding", "non_text", "repetitive")

_WHITESPACE = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[\W]+")  # keeps letters, digits (any script) and underscore
_NOT_DIGIT = re.compile(r"\D+")
_REPLACEMENT = "\ufffd"
# UTF-8 multi-byte sequences decoded as Latin-1/CP1252: a lead byte shown as Ã/Â/Å/Ä/â
# followed by a continuation byte shown as a C1 control, Latin-1 punctuation, or one of the
# CP1252 specials (€ ‚ ƒ „ … † ‡ ˆ ‰ Š ‹ Œ Ž ' ' " " • – — ˜ ™ š › œ ž Ÿ).
_CONTINUATION = "\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
_MOJIBAKE = re.compile(f"[\u00c2\u00c3\u00c4\u00c5\u00e2][{_CONTINUATION}]+")


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of :class:`QualityFilter`; a document failing any one is dropped.

    Ratios are shares of the document's non-whitespace characters unless said otherwise.
    """

    min_chars: int = 100
    """Minimum number of non-whitespace characters."""
    max_symbol_ratio: float = 0.4
    """Share of characters that are neither alphanumeric, underscore nor whitespace."""
    max_digit_ratio: float = 0.4
    """Share of characters that are digits."""
    max_duplicate_line_ratio: float = 0.5
    """Share of characters (of non-blank stripped lines) in lines that repeat an earlier line."""
    top_ngram_size: int = 3
    """n of the word n-gram whose repetition is measured."""
    max_top_ngram_ratio: float = 0.3
    """Share of word characters covered by occurrences of the most frequent word n-gram."""
    max_replacement_char_ratio: float = 0.01
    """Share of characters that are U+FFFD (bytes that could not be decoded)."""
    max_mojibake_ratio: float = 0.01
    """Share of characters inside mojibake sequences such as ``Ã©`` or ``â€™``."""

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise UserError(f"filter min_chars must be >= 0, got {self.min_chars}")
        if self.top_ngram_size < 1:
            raise UserError(f"filter top_ngram_size must be >= 1, got {self.top_ngram_size}")
        for name in ("max_symbol_ratio", "max_digit_ratio", "max_duplicate_line_ratio",
                     "max_top_ngram_ratio", "max_replacement_char_ratio", "max_mojibake_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"filter {name} must be in [0, 1], got {value}")


def duplicate_line_ratio(text: str) -> float:
    """Share of characters of non-blank (stripped) lines that repeat an earlier line."""
    seen: set[str] = set()
    total = duplicated = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        total += len(line)
        if line in seen:
            duplicated += len(line)
        else:
            seen.add(line)
    return duplicated / total if total else 0.0


def top_ngram_ratio(text: str, n: int) -> float:
    """Share of word characters covered by the most frequent word n-gram (Gopher's measure).

    Overlapping occurrences are counted each time, so the value is clipped to 1. An n-gram
    that occurs once is no repetition: the ratio is then 0.
    """
    words = text.split()
    if len(words) < n:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = max(counts.items(), key=lambda kv: kv[1])
    if count < 2:
        return 0.0
    total = sum(map(len, words))
    return min(1.0, count * sum(map(len, gram)) / total)


class QualityFilter:
    """Heuristic quality filter with a named reason per dropped document.

    :meth:`reason` judges one text (the chunker calls it per document); :meth:`reasons` many.
    """

    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()

    def reason(self, text: str) -> str | None:
        """The first failing reason in :data:`REASONS` order, or None to keep the text."""
        cfg = self.config
        compact = _WHITESPACE.sub("", text)
        n = len(compact)
        if n < max(cfg.min_chars, 1):
            return "too_short"
        if (compact.count(_REPLACEMENT) / n > cfg.max_replacement_char_ratio
                or sum(map(len, _MOJIBAKE.findall(text))) / n > cfg.max_mojibake_ratio):
            return "broken_encoding"
        word_chars = len(_NOT_WORD.sub("", compact))
        if ((n - word_chars) / n > cfg.max_symbol_ratio
                or len(_NOT_DIGIT.sub("", compact)) / n > cfg.max_digit_ratio):
            return "non_text"
        if (duplicate_line_ratio(text) > cfg.max_duplicate_line_ratio
                or top_ngram_ratio(text, cfg.top_ngram_size) > cfg.max_top_ngram_ratio):
            return "repetitive"
        return None

    def reasons(self, texts: Iterable[str]) -> list[str | None]:
        """:meth:`reason` for each text."""
        return [self.reason(str(t)) for t in texts]
