"""Quality filters keep real prose and real Python source, and drop garbage with a named reason."""

from __future__ import annotations

import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from cola_ray.errors import UserError
from cola_ray.stages.filters import REASONS, FilterConfig, QualityFilter, top_ngram_ratio
from tests.conftest import news_texts

FRENCH = ("Le café était fermé ce matin, alors nous sommes allés à la boulangerie près de la "
          "gare. Les élèves ont préparé un exposé sur l'économie européenne et la société "
          "française; leur professeur a été très impressionné par la qualité du résumé.")


@pytest.fixture(scope="module")
def qf() -> QualityFilter:
    return QualityFilter()


def test_keeps_real_news_prose(qf):
    texts = news_texts()
    assert len(texts) >= 300
    assert qf.reasons(texts) == [None] * len(texts)


def test_keeps_real_python_source(qf):
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(lib.glob("*.py")) + sorted(lib.glob("json/*.py"))
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    assert len(texts) > 100
    reasons = qf.reasons(texts)
    assert reasons.count(None) >= 0.95 * len(texts), Counter(reasons)
    assert qf.reasons(t[:3000] for t in texts).count(None) >= 0.95 * len(texts)


def test_keeps_whole_stdlib_modules(qf):
    lib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("argparse.py", "json/decoder.py", "textwrap.py", "heapq.py", "dataclasses.py"):
        assert qf.reason((lib / name).read_text(encoding="utf-8")) is None, name


def test_keeps_accented_prose_and_utf8_clean_text(qf):
    assert qf.reason(FRENCH) is None


@pytest.mark.parametrize("text, reason", [
    ("hi", "too_short"),
    ("   \n\t  " * 100, "too_short"),
    ("%%%% $$$$ #### " * 20, "non_text"),
    ("0123456789" * 100, "non_text"),
    ("this is the very same line of text\n" * 50, "repetitive"),
    ("buy cheap pills now " * 40, "repetitive"),
    ("The report \ufffd\ufffd said \ufffd that \ufffd\ufffd the d\ufffdta were \ufffd lost. " * 5,
     "broken_encoding"),
    (FRENCH.encode("utf-8").decode("cp1252"), "broken_encoding"),
    (FRENCH.encode("utf-8").decode("latin-1"), "broken_encoding"),
])
def test_drops_garbage_with_reason(qf, text, reason):
    assert qf.reason(text) == reason


def test_mojibake_quotes_in_english_prose(qf):
    # ’ and “ survive a cp1252 misreading as â€™ and â€œ (” does not: byte 0x9d is undefined)
    text = news_texts()[0].replace(" the ", " \u2019the\u201c ")
    assert qf.reason(text) is None
    assert qf.reason(text.encode("utf-8").decode("cp1252")) == "broken_encoding"


def test_reasons_are_checked_in_documented_order(qf):
    assert REASONS[0] == "too_short"
    assert qf.reason("\ufffd" * 5) == "too_short"
    # broken characters also inflate the symbol share; the specific diagnosis wins
    assert qf.reason("\ufffd" * 200) == "broken_encoding"


def test_thresholds_are_configurable():
    text = news_texts()[0]
    assert QualityFilter(FilterConfig(min_chars=len(text) * 2)).reason(text) == "too_short"
    assert QualityFilter(FilterConfig(max_symbol_ratio=0.001)).reason(text) == "non_text"
    assert QualityFilter(FilterConfig(max_top_ngram_ratio=0.0, top_ngram_size=1)).reason(text) == "repetitive"


def test_top_ngram_ratio():
    assert top_ngram_ratio("a b c d e f", 2) == 0.0  # no n-gram repeats
    assert top_ngram_ratio("x y x y x y x y", 2) == pytest.approx(1.0)
    assert top_ngram_ratio("one", 3) == 0.0


def test_bad_config_is_user_error():
    with pytest.raises(UserError, match="max_digit_ratio"):
        FilterConfig(max_digit_ratio=1.5)
    with pytest.raises(UserError, match="top_ngram_size"):
        FilterConfig(top_ngram_size=0)
