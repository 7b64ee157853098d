"""The 18 calibration sets of deliberately varied quality for the score-vs-sweep experiment
(docs/results.md section 3, issue 10), all drawn from one curated pool.

    python bench/correlation_sets.py --pool runs/corr/pool --out runs/corr/sets

--pool is a finished `cola-ray curate` output folder (embedded with layer statistics). Each set is
written as a curate-style folder (calibration.jsonl + manifest.json naming the pool) under --out,
through the one selection path (`select_and_write`), so `cola-ray score` scores it from the pool's
stored statistics and `cola-ray sweep` (bench/experiment_score.yaml) compresses with it. A set
already written is kept, so a rerun resumes. The list is fixed before any result is looked at:

  random-k64-s0..s3       uniform draws (seed noise)
  random-k8-s0, -s1       very small k
  cola-k64-s0, -s1        COLA's cluster representatives
  random-stratified-k64   uniform within each source, proportional quotas
  lexical-k64             model-free lexical diversity
  perplexity{,-low,-high}-k64   median / least / most perplexing chunks (one scoring pass)
  {wiki,news,code}-only-k64     one source alone (random within it)
  shortest-k64            the 64 chunks with the fewest tokens
  repeat-8x8              8 random chunks, each written 8 times (a duplicate-heavy set: 64 rows)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screen_selectors import base_config  # noqa: E402

from cola_ray import storage  # noqa: E402
from cola_ray.pool import Pool  # noqa: E402
from cola_ray.selectors import get_selector  # noqa: E402
from cola_ray.selectors.registry import ranked, register_selector  # noqa: E402
from cola_ray.workflows.curate import SHARDS  # noqa: E402
from cola_ray.workflows.selection import select_and_write  # noqa: E402


@register_selector("shortest", description="the k chunks with the fewest tokens (ties by id)",
                   score="number of tokens", uses_seed=False)
def _shortest(pool: Pool, k: int, ctx):
    table = pool.read(["num_tokens"])
    rows = sorted(zip(table.column("num_tokens").to_pylist(), table.column("id").to_pylist()))[:k]
    return ranked([i for _, i in rows], [float(n) for n, _ in rows])


# name -> (selector, source view or None, k, seed)
SETS = {
    **{f"random-k64-s{s}": ("random", None, 64, s) for s in range(4)},
    **{f"random-k8-s{s}": ("random", None, 8, s) for s in range(2)},
    **{f"cola-k64-s{s}": ("cola", None, 64, s) for s in range(2)},
    "random-stratified-k64": ("random-stratified", None, 64, 0),
    "lexical-k64": ("lexical", None, 64, 0),
    "perplexity-k64": ("perplexity", None, 64, 0),
    "perplexity-low-k64": ("perplexity-low", None, 64, 0),
    "perplexity-high-k64": ("perplexity-high", None, 64, 0),
    **{f"{src}-only-k64": ("random", src, 64, 0) for src in ("wiki", "news", "code")},
    "shortest-k64": ("shortest", None, 64, 0),
    "repeat-8x8": ("random", None, 8, 7),
}
REPEATS = {"repeat-8x8": 8}


def build(pool_out: str, out: Path) -> list[str]:
    base = base_config(pool_out)
    pool = Pool.open(storage.join(pool_out, SHARDS))
    folders = []
    for name, (selector, source, k, seed) in SETS.items():
        folder = out / name
        folders.append(str(folder))
        if (folder / "manifest.json").exists():
            continue
        t0 = time.perf_counter()
        cfg = dataclasses.replace(base, selector=selector, num_samples=k, seed=seed, out=str(folder))
        m = select_and_write(cfg, get_selector(selector), pool.only(source) if source else pool, str(folder),
                             str(out / "_work"))
        if name in REPEATS:  # the same rows n times: what a duplicate-heavy crawl hands a compressor
            path = folder / "calibration.jsonl"
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(line for line in lines for _ in range(REPEATS[name])))
            m["selection"]["details"]["repeated"] = REPEATS[name]
            (folder / "manifest.json").write_text(json.dumps(m, indent=1))
        print(f"[sets] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, help="a finished cola-ray curate output folder")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from cola_ray.workflows.common import ensure_ray

    ensure_ray()
    for f in build(args.pool, Path(args.out)):
        print(f)


if __name__ == "__main__":
    main()
